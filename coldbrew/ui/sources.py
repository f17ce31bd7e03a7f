"""What the dashboard reads, handed to it by the gateway's wiring: it builds nothing of its own.

The UI package is a reader of state that other packages own (the control store, serving's pools and
scaling core, the meter, logs, the async queue, transform jobs), and an API client of the same
handlers users call. Keeping every source in one value means the UI can be built against a real
server's parts or against parts made in a test, and that nothing outside the gateway wiring needs to
know the UI exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp

from coldbrew.auth.keys import KeyRing
from coldbrew.backends.zygotes import Zygotes
from coldbrew.capture.writer import CaptureWriter
from coldbrew.metering.written import MinuteLog
from coldbrew.serving.service import Serving


@dataclass(frozen=True)
class UiSources:
    serving: Serving
    """Live endpoints, pools and the scaling core: read on the event loop, never written."""
    api: ASGIApp
    """The gateway's app behind authentication: the UI's actions are requests to it, so they are
    validated and answered exactly as a client's would be."""
    db_path: Path
    """The control store and the meter (``coldbrew.db``), read through read-only connections."""
    logs_db_path: Path | None
    """``logs.db``, or None when log collection is off."""
    async_db_path: Path
    flush_meter: Callable[[], object]
    """Writes the meter's buffer out, so a page shows every invocation answered before it."""
    meter_writes: MinuteLog
    """Which minutes the meter wrote when: the pages keep minutes in memory and read only those."""
    region: str
    account_id: str
    keys: KeyRing | None
    """The access keys, when authentication is on; None: anyone who reaches the port may act."""
    secure_cookies: bool = False
    """The server speaks HTTPS: session cookies get the Secure attribute."""
    zygotes: Zygotes | None = None
    """The local backend's zygotes, for the machine page (None on a backend without them)."""
    capture: CaptureWriter | None = None
    """The data capture writer, for its counters (server-wide: it does not count per endpoint)."""
