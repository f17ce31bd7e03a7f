"""Memory cgroups for workers, created under coldbrew's own cgroup where the host allows it.

With a cgroup the kernel enforces MemorySizeInMB exactly (the worker is OOM-killed at the limit,
and the cgroup's counter says so); without one, serving falls back to an RSS watchdog. Both cgroup
v1 (``memory.limit_in_bytes``) and v2 (``memory.max``) hierarchies are handled.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from pathlib import Path

log = logging.getLogger("coldbrew.backends")

CGROUP_ROOT = Path("/sys/fs/cgroup")


class WorkerCgroup:
    def __init__(self, path: Path, v2: bool) -> None:
        self.path = path
        self.v2 = v2

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

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


class MemoryCgroups:
    """The parent cgroup ``coldbrew-<pid>`` under the gateway's own memory cgroup."""

    def __init__(self, base: Path, v2: bool) -> None:
        self.base = base
        self.v2 = v2
        self._ids = itertools.count()

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
            return cls(base, v2)
        return None

    def attach(self, pid: int, limit_mb: int) -> WorkerCgroup | None:
        """Put ``pid`` in a new cgroup limited to ``limit_mb``; None if the host refuses."""
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
        return WorkerCgroup(path, self.v2)

    def remove(self) -> None:
        for child in self.base.glob("w*"):
            with contextlib.suppress(OSError):
                child.rmdir()
        with contextlib.suppress(OSError):
            self.base.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
