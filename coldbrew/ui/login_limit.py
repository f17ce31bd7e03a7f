"""A bound on guessing: failed logins (form or HTTP Basic) per client address.

Past ``FAILURES`` failures from one address within ``WINDOW_S``, every login from it is refused
until the window that began with its first failure is over, right secret or not, so guessing costs
a window per ``FAILURES`` tries. Memory is bounded: at most ``MAX_ADDRESSES`` addresses are
remembered, the longest unseen forgotten first. Behind a reverse proxy every client has the proxy's
address, so they share one allowance.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

FAILURES = 10
WINDOW_S = 300.0
MAX_ADDRESSES = 10_000


class LoginLimiter:
    def __init__(
        self,
        failures: int = FAILURES,
        window_s: float = WINDOW_S,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures, self.window_s, self.max_addresses = failures, window_s, max_addresses
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()
        """Address -> (when its window began, failures in it)."""

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again; None: it may now."""
        now = self._clock()
        with self._lock:
            found = self._seen.get(address)
            if found is None:
                return None
            began, count = found
            if now - began >= self.window_s:
                del self._seen[address]
                return None
            return self.window_s - (now - began) if count >= self.failures else None

    def failed(self, address: str) -> None:
        now = self._clock()
        with self._lock:
            began, count = self._seen.pop(address, (now, 0))
            if now - began >= self.window_s:
                began, count = now, 0
            self._seen[address] = (began, count + 1)
            while len(self._seen) > self.max_addresses:
                self._seen.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._seen.pop(address, None)

    def message(self, wait_s: float) -> str:
        return (
            f"Too many failed logins from this address ({self.failures} within {self.window_s / 60:.0f} "
            f"minutes); try again in {max(1, round(wait_s))} s."
        )
