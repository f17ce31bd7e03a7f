"""The worker processes of the local backend, as serving sees them (``WorkerProcess``).

Both kinds, a fresh interpreter (our child) and one forked by a zygote (not our child), may be
held to their memory size by a cgroup and are measured by their resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import threading
from collections.abc import Mapping

import psutil

from coldbrew.backends.cgroups import WorkerCgroup
from coldbrew.backends.start_trace import StartTrace
from coldbrew.worker.zygote import THREAD_ENV


def rss(pid: int, children: bool = True) -> int:
    """Resident memory of ``pid`` (and of its descendants); 0 once it is gone."""
    try:
        process = psutil.Process(pid)
        total = process.memory_info().rss
        if children:
            for child in process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
        return int(total)
    except psutil.Error:
        return 0


def cpu_seconds(pid: int, children: bool = False) -> float | None:
    """CPU time (user + system) ``pid`` has used, with that of the children it has waited for (and
    of its live descendants if ``children``); None once it is gone."""
    try:
        process = psutil.Process(pid)
        times = process.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        if children:
            for child in process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    t = child.cpu_times()
                    total += t.user + t.system
        return float(total)
    except psutil.Error:
        return None


def child_env(model_env: Mapping[str, str], base: Mapping[str, str]) -> dict[str, str]:
    """The environment of every process the backend starts: ``base`` (the allow-listed part of
    the gateway's, :func:`coldbrew.backends.containment.base_env`), numerical thread pools pinned
    to one thread unless the caller chose otherwise (as in the zygote, so both kinds of worker
    behave alike), then the model's own variables."""
    env = dict(base)
    for name in THREAD_ENV:
        env.setdefault(name, "1")
    env.update(model_env)
    return env


async def kill(process: asyncio.subprocess.Process | None, pid: int) -> None:
    """SIGKILL a worker that is not ready: our child ``process``, else the forked ``pid``."""
    if process is not None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
    elif pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class ExitWatch:
    """Whether a process that is not our child (a zygote's child) has exited, read from the kernel
    through a pidfd whenever asked (a cheap poll, from any thread)."""

    def __init__(self, pid: int) -> None:
        self._poll: select.poll | None = None
        self._pidfd: int | None = None
        # Asked on the event loop and from /metrics' thread; a poll object refuses concurrent use
        # ("concurrent poll() invocation"), which once failed an invocation mid-acquire.
        self._lock = threading.Lock()
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        self._poll = select.poll()
        self._poll.register(self._pidfd, select.POLLIN)

    def exited(self) -> bool:
        with self._lock:
            if self._poll is None:
                return True
            if not self._poll.poll(0):
                return False
            self._forget_locked()
            return True

    def forget(self) -> None:
        """Close the pidfd: from now on the process counts as exited."""
        with self._lock:
            self._forget_locked()

    def _forget_locked(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
        self._pidfd, self._poll = None, None


class CgroupLimited:
    """What both kinds of worker share: the memory cgroup that may limit them."""

    cgroup: WorkerCgroup | None = None
    start_trace: StartTrace | None = None
    """How its start went, step by step (set by ``launch_worker``): a cold start's breakdown."""
    pid: int
    counts_children = False
    """Only a user's own server may start processes of its own; scanning for children of
    coldbrew's workers would cost the watchdog a walk over every process, for nothing."""

    def rss_bytes(self) -> int:
        """Resident memory of the worker (and of what it started, for a user's server)."""
        return rss(self.pid, children=self.counts_children)

    @property
    def memory_enforced(self) -> bool:
        return self.cgroup is not None

    def oom_killed(self) -> bool:
        return self.cgroup is not None and self.cgroup.oom_killed()

    def _release_cgroup(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()


class SpawnedWorker(CgroupLimited):
    """A worker started as a fresh interpreter (or a user's server): a child of the gateway."""

    process_group = False
    """A user's server leads a process group of its own, stopped whole with what it started."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        socket_path: str | None,
        setup_ms: float,
        address: str | None = None,
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.address = address or f"unix:{socket_path}"
        self.socket_path = socket_path
        self.setup_ms = setup_ms

    def is_alive(self) -> bool:
        return self.process.returncode is None

    async def stop(self, grace_s: float = 2.0) -> None:
        if self.process.returncode is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace_s)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                await self.process.wait()
        if self.process_group:
            # What the server started and left running when it exited.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        if self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        self._release_cgroup()

    def _signal(self, signal_number: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.process_group:
                os.killpg(self.pid, signal_number)
            else:
                self.process.send_signal(signal_number)


class ForkedWorker(CgroupLimited):
    """A worker forked by the zygote: not our child, so its exit is followed through a pidfd."""

    def __init__(self, pid: int, socket_path: str, setup_ms: float) -> None:
        self.pid = pid
        self.address = f"unix:{socket_path}"
        self.socket_path = socket_path
        self.setup_ms = setup_ms
        self._exited = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self._pidfd = None
            self._exited.set()
            return
        self._loop.add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._exited.set()

    def is_alive(self) -> bool:
        return not self._exited.is_set()

    async def stop(self, grace_s: float = 2.0) -> None:
        if self.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self._exited.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                await self._exited.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self._release_cgroup()
