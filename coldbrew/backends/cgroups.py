"""Memory cgroups for workers, created under coldbrew's own cgroup where the host allows it.

With a cgroup the kernel enforces MemorySizeInMB exactly (the worker is OOM-killed at the limit,
and the cgroup's counter says so); without one, serving falls back to an RSS watchdog. Both cgroup
v1 (``memory.limit_in_bytes``) and v2 (``memory.max``) hierarchies are handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger("coldbrew.backends")

CGROUP_ROOT = Path("/sys/fs/cgroup")


class WorkerCgroup:
    def __init__(self, path: Path, v2: bool, cpu_path: Path | None = None) -> None:
        self.path = path
        self.v2 = v2
        self.cpu_path = cpu_path

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of this cgroup for exceeding the limit."""
        events = self.path / ("memory.events" if self.v2 else "memory.oom_control")
        try:
            for line in events.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def add(self, pid: int) -> None:
        """Put another process in this cgroup (a user server's relay, which serves it)."""
        for path in (self.path, self.cpu_path):
            if path is not None:
                with contextlib.suppress(OSError):
                    (path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        for path in (self.path, self.cpu_path):
            if path is not None:
                with contextlib.suppress(OSError):
                    path.rmdir()


def _remove_moved(move: asyncio.Future[WorkerCgroup | None]) -> None:
    if not move.cancelled() and move.exception() is None and (cgroup := move.result()) is not None:
        cgroup.remove()


class MemoryCgroups:
    """The parent cgroup ``coldbrew-<pid>`` under the gateway's own memory cgroup."""

    def __init__(self, base: Path, v2: bool, cpu_base: Path | None = None) -> None:
        self.base = base
        self.v2 = v2
        self.cpu_base = cpu_base
        """Where CPU shares are set, proportional to memory as SageMaker sizes CPU by memory."""
        self._ids = itertools.count()
        self._mover = ThreadPoolExecutor(1, thread_name_prefix="cgroup-move")
        """Where ``attach_off_loop`` runs: a thread of its own, so that moves never queue behind
        other work of the loop's default executor (artifact downloads)."""

    async def attach_off_loop(self, pid: int, limit_mb: int, background: bool = False) -> WorkerCgroup | None:
        """``attach``, in a thread: moving a process between cgroups waits for an RCU grace
        period in the kernel (6-13 ms measured), which on the event loop stalled every other
        request meanwhile. Cancelled, the move still finishes and its cgroup is removed."""
        loop = asyncio.get_running_loop()
        move = loop.run_in_executor(self._mover, functools.partial(self.attach, pid, limit_mb, background))
        try:
            return await asyncio.shield(move)
        except asyncio.CancelledError:
            move.add_done_callback(_remove_moved)
            raise

    @classmethod
    def detect(cls) -> MemoryCgroups | None:
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
        candidates: list[tuple[Path, bool]] = []
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                candidates.append((CGROUP_ROOT / "memory" / path.lstrip("/"), False))
            elif controllers == "":
                for root in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
                    if "memory" in _read(root / "cgroup.controllers").split():
                        candidates.append((root / path.lstrip("/"), True))
        for own, v2 in candidates:
            sweep_stale(own)
            base = own / f"coldbrew-{os.getpid()}"
            try:
                base.mkdir(exist_ok=True)
                if v2:
                    (base / "cgroup.subtree_control").write_text("+memory")
            except OSError as exc:
                log.info("memory cgroups unavailable under %s (%s); using the RSS watchdog", own, exc)
                with contextlib.suppress(OSError):
                    base.rmdir()
                continue
            log.info("worker memory limits are enforced by cgroups under %s", base)
            return cls(base, v2, _cpu_base(lines, v2, base))
        return None

    def attach(self, pid: int, limit_mb: int, background: bool = False) -> WorkerCgroup | None:
        """Put ``pid`` in a new cgroup limited to ``limit_mb``; None if the host refuses.

        ``background`` (a batch transform job's worker): the least CPU weight, and the kernel's
        idle class where it has one (``cpu.idle``), so that the job runs on what endpoints leave.
        Niceness alone cannot do it: it only weighs threads within one cgroup, and by memory a
        job's 8 GB instance would outweigh a 1 GB endpoint eight to one."""
        path = self.base / f"w{next(self._ids)}"
        try:
            path.mkdir()
            limit = str(limit_mb * 1024 * 1024)
            if self.v2:
                (path / "memory.max").write_text(limit)
                with contextlib.suppress(OSError):
                    (path / "memory.swap.max").write_text("0")
            else:
                (path / "memory.limit_in_bytes").write_text(limit)
                with contextlib.suppress(OSError):
                    (path / "memory.swappiness").write_text("0")
            (path / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            log.warning("could not limit worker %d with a cgroup: %s", pid, exc)
            with contextlib.suppress(OSError):
                path.rmdir()
            return None
        return WorkerCgroup(path, self.v2, self._cpu(pid, limit_mb, path.name, background))

    def _cpu(self, pid: int, limit_mb: int, name: str, background: bool) -> Path | None:
        if self.cpu_base is None:
            return None
        if self.v2:
            # The memory cgroup is the cpu cgroup in v2: weight 100 is one default process (1 GB).
            weight = 1 if background else max(1, min(10000, limit_mb * 100 // 1024))
            with contextlib.suppress(OSError):
                (self.base / name / "cpu.weight").write_text(str(weight))
            if background:
                with contextlib.suppress(OSError):
                    (self.base / name / "cpu.idle").write_text("1")
            return None
        path = self.cpu_base / name
        try:
            path.mkdir()
            (path / "cpu.shares").write_text(str(2 if background else max(2, limit_mb)))  # 1024 per GB
            if background:
                with contextlib.suppress(OSError):
                    (path / "cpu.idle").write_text("1")
            (path / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            log.info("no CPU share for worker %d: %s", pid, exc)
            with contextlib.suppress(OSError):
                path.rmdir()
            return None
        return path

    def remove(self) -> None:
        for base in (self.base, self.cpu_base):
            if base is None:
                continue
            for child in base.glob("w*"):
                with contextlib.suppress(OSError):
                    child.rmdir()
            with contextlib.suppress(OSError):
                base.rmdir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(parent: Path) -> None:
    """Remove ``coldbrew-<pid>`` cgroups (and ``w*`` children) of gateways no longer running: one
    killed with SIGKILL never got to remove its own."""
    try:
        entries = list(parent.glob("coldbrew-*"))
    except OSError:
        return
    for base in entries:
        pid = base.name.removeprefix("coldbrew-")
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        for child in base.glob("w*"):
            with contextlib.suppress(OSError):
                child.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()


def _cpu_base(lines: list[str], v2: bool, memory_base: Path) -> Path | None:
    if v2:
        if "cpu" in _read(memory_base.parent / "cgroup.controllers").split():
            with contextlib.suppress(OSError):
                (memory_base / "cgroup.subtree_control").write_text("+cpu")
                return memory_base
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            base = CGROUP_ROOT / controllers / path.lstrip("/") / f"coldbrew-{os.getpid()}"
            if not base.parent.exists():
                base = CGROUP_ROOT / "cpu" / path.lstrip("/") / f"coldbrew-{os.getpid()}"
            sweep_stale(base.parent)
            try:
                base.mkdir(exist_ok=True)
            except OSError:
                return None
            return base
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
