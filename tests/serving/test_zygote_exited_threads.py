"""A zygote's liveness is asked from two threads at once (the event loop's acquire and /metrics'
collector reading the zygotes' memory): it must answer both, never raise."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace
from typing import Any

from coldbrew.backends.zygotes import Zygote


def test_exited_from_many_threads_at_once() -> None:
    # The zygote's process stands in as this process: alive, its pidfd pollable.
    process: Any = SimpleNamespace(pid=os.getpid(), returncode=None)
    zygote = Zygote(process, "/nonexistent.sock")
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def ask() -> None:
        start.wait()
        try:
            for _ in range(5000):
                assert zygote.is_alive()
        except BaseException as exc:  # a RuntimeError("concurrent poll() invocation") before the lock
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    process.returncode = 0
    assert zygote.exited() and not zygote.is_alive()
