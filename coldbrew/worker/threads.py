"""The threads of this process: counted and named from the kernel's view, and the numerical
libraries' pools sized. A process that forks (the zygote, a model template) must hold no thread
but its main one: a fork copies only the calling thread, and locks other threads held stay held
in the child."""

from __future__ import annotations

import contextlib
import os
import sys


def thread_count() -> int:
    """Threads of this process as the kernel sees them (not only Python's)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def thread_names() -> list[str]:
    """The names of this process's threads other than the main one (``/proc/self/task/*/comm``)."""
    names = []
    with contextlib.suppress(OSError):
        for tid in sorted(os.listdir("/proc/self/task")):
            if tid == str(os.getpid()):
                continue
            try:
                with open(f"/proc/self/task/{tid}/comm") as comm:
                    names.append(comm.read().strip())
            except OSError:
                continue  # it has just exited
    return names


def limit_threads(threads: str | None) -> None:
    """The zygote loaded BLAS with one thread; give this worker the count its memory size buys
    (a fresh worker gets it from the environment before the libraries load)."""
    if not threads or not threads.isdigit() or int(threads) <= 1:
        return
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(threads))
    except ImportError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))


def quiet_loaders() -> None:
    """Keep libraries from starting a thread while a model loads, where they have a setting for it,
    so that the process that loaded it can still fork (a model template). tqdm starts a monitor
    thread with its first progress bar (transformers shows one while weights load); its documented
    ``monitor_interval = 0`` turns the monitor off. Only a tqdm already imported (a zygote's
    preload of transformers imports it) is set: importing it here would cost every model."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        with contextlib.suppress(AttributeError):
            tqdm.tqdm.monitor_interval = 0
