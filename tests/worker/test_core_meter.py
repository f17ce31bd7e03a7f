"""What a worker says an invocation kept busy (coldbrew.worker.cores): about one core for a
CPU-bound call, whether or not other processes crowd its core; about none for one that sleeps."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator

import pytest

from coldbrew.worker.cores import CoreMeter


def spin(cpu_s: float) -> None:
    end = time.process_time() + cpu_s
    while time.process_time() < end:
        pass


def measured(call: object) -> float:
    meter = CoreMeter()
    started = meter.start()
    call()  # type: ignore[operator]
    return meter.cores(started)


def test_a_cpu_bound_call_keeps_one_core_busy() -> None:
    assert 0.8 <= measured(lambda: spin(0.05)) <= 1.3


def test_a_call_that_sleeps_keeps_none_busy() -> None:
    assert measured(lambda: time.sleep(0.05)) < 0.2


def _hog(stop: multiprocessing.synchronize.Event) -> None:
    os.sched_setaffinity(0, {0})
    while not stop.is_set():
        spin(0.01)


@pytest.fixture
def crowded_core() -> Iterator[None]:
    """This process and three CPU-bound ones on core 0 alone."""
    before = os.sched_getaffinity(0)
    stop = multiprocessing.get_context("fork").Event()
    hogs = [multiprocessing.get_context("fork").Process(target=_hog, args=(stop,)) for _ in range(3)]
    for hog in hogs:
        hog.start()
    os.sched_setaffinity(0, {0})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
        stop.set()
        for hog in hogs:
            hog.join(10)


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"), reason="no schedstat in this kernel")
def test_time_waiting_for_a_crowded_core_is_not_counted(crowded_core: None) -> None:
    wall_started = time.perf_counter()
    cores = measured(lambda: spin(0.1))
    wall = time.perf_counter() - wall_started
    # Four runnable processes share the core: the call took far longer than its CPU time, yet the
    # figure is still about one core (CPU time over wall time would be about a quarter).
    assert wall > 0.2
    assert cores >= 0.7
