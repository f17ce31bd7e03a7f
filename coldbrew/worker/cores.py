"""The cores an invocation keeps busy, measured in the worker and sent to the gateway with its
answer (``x-coldbrew-cores``), where the scaling core's rule for cores reads it (``Finished.cores``).

It is the process's CPU time over the time the invocation ran or was blocked, leaving out the time
the handling thread waited for a core (Linux's schedstat, per thread). Leaving that out is what
makes the figure the model's own: on a machine whose cores are shared by more runnable workers than
it has, a CPU-bound predict's wall time grows with the queue for the cores, its CPU time does not.
Without schedstat (another kernel), the time waited counts as blocked and the figure is lower than
the truth; the gateway then holds back fewer invocations, never more.

Cost, measured: ~0.4 µs for each schedstat read and ~0.25 µs for each CPU clock read, two of each
per invocation.
"""

from __future__ import annotations

import os
import threading
import time

HEADER = b"x-coldbrew-cores"
"""The answer's header that carries the figure (never passed on to the client)."""

_SCHEDSTAT = "/proc/thread-self/schedstat"


class _ThreadClock:
    """The calling thread's time waiting for a core, in ns (0 where the kernel does not say)."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open(_SCHEDSTAT, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._fd = None
        self.pid = os.getpid()

    def waited_ns(self) -> int:
        if self._fd is None:
            return 0
        try:
            # "run_ns wait_ns timeslices": read again from offset 0, the kernel writes it anew.
            return int(os.pread(self._fd, 64, 0).split()[1])
        except (OSError, ValueError, IndexError):
            return 0


class CoreMeter:
    """Measures one invocation at a time per thread: ``start()`` before it, ``cores(start)`` after."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.most = float(len(os.sched_getaffinity(0)))
        """The cores this process may run on: no reading says more."""

    def _clock(self) -> _ThreadClock:
        clock: _ThreadClock | None = getattr(self._local, "clock", None)
        if clock is None or clock.pid != os.getpid():
            # Opened in the thread (and process) it measures: /proc/thread-self is resolved at
            # open, and a template's file would describe the template's thread, not its worker's.
            clock = self._local.clock = _ThreadClock()
        return clock

    def start(self) -> tuple[int, int, int]:
        return time.process_time_ns(), time.perf_counter_ns(), self._clock().waited_ns()

    def cores(self, start: tuple[int, int, int]) -> float:
        cpu_ns, wall_ns, waited_ns = start
        # Read in the reverse order of start(): the kernel adds a wait to the counter only when the
        # thread runs again, so a wait between two reads here is counted in the wall time and
        # not in the wait (the figure comes out low), never the other way round (it came out at
        # 420 cores, once in ~7,000 invocations, when the wait was read last).
        waited = self._clock().waited_ns() - waited_ns
        wall = time.perf_counter_ns() - wall_ns - waited
        cpu = time.process_time_ns() - cpu_ns
        return min(self.most, cpu / wall) if wall > 0 else 0.0


def header_value(cores: float) -> bytes:
    return b"%.3f" % cores
