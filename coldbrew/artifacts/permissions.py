"""Who may read a cache entry (a model directory, a source directory, installed requirements).

Copies never widen permissions: an entry is readable by the server's user alone (directories
0700, files 0600), or, when workers run as users of their own (the server runs as root,
:mod:`coldbrew.backends.containment`), also by one group that belongs to that entry only
(0750/0640), which only the workers serving it join. Nothing in the cache is ever readable by
others, whatever the mode of the file it was copied from. Executable bits are kept for the owner
(and the group).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("coldbrew.artifacts")


class ContentGroups:
    """Hands out one group id per cache entry from ``gids``. The ids in use are the entries' own
    (their directories' group), so nothing else needs to be kept: a restart scans ``roots``."""

    def __init__(self, gids: range, roots: Iterable[Path]) -> None:
        self.gids = gids
        self._lock = threading.Lock()
        self._used: set[int] = set()
        for root in roots:
            try:
                entries = list(Path(root).iterdir())
            except OSError:
                continue
            for entry in entries:
                try:
                    gid = entry.lstat().st_gid
                except OSError:
                    continue
                if gid in gids:
                    self._used.add(gid)
        self._next = gids.start

    def allocate(self) -> int:
        with self._lock:
            for _ in range(len(self.gids)):
                gid = self._next
                self._next = self._next + 1 if self._next + 1 < self.gids.stop else self.gids.start
                if gid not in self._used:
                    self._used.add(gid)
                    return gid
        raise OSError("COLDBREW_WORKER_IDS has no group left for another cache entry")

    def owns(self, gid: int) -> bool:
        return gid in self.gids


def seal(tree: Path, groups: ContentGroups | None) -> None:
    """Give ``tree`` (not yet published) the permissions of a cache entry."""
    gid = groups.allocate() if groups is not None else None
    _apply(tree, gid)


def sealed(tree: Path, groups: ContentGroups | None) -> bool:
    """Whether the entry ``tree`` already has a cache entry's permissions (entries an older
    coldbrew wrote, world-readable, do not)."""
    try:
        st = tree.lstat()
    except OSError:
        return True
    if groups is not None:
        return groups.owns(st.st_gid) and stat.S_IMODE(st.st_mode) == 0o750
    return stat.S_IMODE(st.st_mode) == 0o700


def reseal(tree: Path, groups: ContentGroups | None) -> None:
    """Bring an entry written by an older coldbrew to a cache entry's permissions."""
    log.info("restricting the permissions of cache entry %s", tree.name[:12])
    seal(tree, groups)


def _apply(tree: Path, gid: int | None) -> None:
    dir_mode, file_mode, exec_bits = (0o750, 0o640, 0o110) if gid is not None else (0o700, 0o600, 0o100)
    for dirpath, dirnames, filenames in os.walk(tree):
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = here / name
            st = path.lstat()
            if gid is not None:
                os.lchown(path, -1, gid)
            if stat.S_ISLNK(st.st_mode):
                continue  # a link has no mode of its own; os.walk does not follow it either
            if stat.S_ISDIR(st.st_mode):
                os.chmod(path, dir_mode)
            else:
                os.chmod(path, file_mode | (exec_bits if st.st_mode & stat.S_IXUSR else 0))
    if gid is not None:
        os.lchown(tree, -1, gid)
    os.chmod(tree, dir_mode)
