"""Which minutes of ``meter_minutes`` the meter has written, and when: for readers that keep minutes
in memory.

A minute's row keeps changing after the minute is over: an invocation is recorded in the minute it
started once it ends (an asynchronous one up to an hour later). So a reader that keeps minutes in
memory (the dashboard) cannot tell by the clock which ones are final; it asks this log which minutes
were written since it last read them, and reads only those again. The meter records a flush's
minutes after its transaction commits, so a reader that takes the version before it reads never
misses a write.

Bounded: the least recently written minutes are forgotten past ``keep``; a reader whose version is
older than what was forgotten is told so (``None``) and reads everything again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

KEEP = 20_000
"""Minutes remembered: two weeks of minutes each written at least once."""


class MinuteLog:
    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._version = 0
        self._written: OrderedDict[int, int] = OrderedDict()
        """Minute (Unix seconds) -> the version that last wrote it, oldest write first."""
        self._forgotten = 0
        """The newest version among forgotten entries: a reader older than it may have missed one."""

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    def wrote(self, minutes: Iterable[int]) -> None:
        """Called by the meter after a flush's commit, with the minutes it wrote."""
        with self._lock:
            self._version += 1
            for minute in minutes:
                self._written[minute] = self._version
                self._written.move_to_end(minute)
            while len(self._written) > self.keep:
                _, version = self._written.popitem(last=False)
                self._forgotten = max(self._forgotten, version)

    def since(self, version: int) -> tuple[int, set[int] | None]:
        """(the current version, the minutes written after ``version``), or None in place of the
        minutes when the log no longer knows (read everything again)."""
        with self._lock:
            if version < self._forgotten:
                return self._version, None
            changed = set()
            # Newest writes are at the end: stop at the first one the reader has seen.
            for minute in reversed(self._written):
                if self._written[minute] <= version:
                    break
                changed.add(minute)
            return self._version, changed
