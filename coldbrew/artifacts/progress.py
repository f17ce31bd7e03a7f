"""Progress of a long transfer, as log lines a person watching the server can follow."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("coldbrew.artifacts")

INTERVAL_S = 5.0
"""At most one line this often: a 10 GB download says how it goes without flooding the log."""

MiB = 1024 * 1024


class TransferProgress:
    """Counts bytes of one transfer of ``total`` bytes (0 if unknown) and logs how far it is."""

    def __init__(
        self,
        label: str,
        total: int,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.label, self.total, self.clock, self.interval_s = label, total, clock, interval_s
        self.done = 0
        self._started = self._last = clock()

    def add(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if now - self._last < self.interval_s:
            return
        self._last = now
        rate = self.done / MiB / max(now - self._started, 1e-9)
        if self.total:
            log.info(
                "model data %s: %.0f of %.0f MB (%d%%), %.1f MB/s",
                self.label, self.done / MiB, self.total / MiB, 100 * self.done // self.total, rate,
            )  # fmt: skip
        else:
            log.info("model data %s: %.0f MB, %.1f MB/s", self.label, self.done / MiB, rate)
