"""The data dir is the server's alone: 0700, and every file in it created private.

It holds every model's Environment (``coldbrew.db``), the access keys, the embedded S3's objects
and the model cache; no other local user, and no worker, reads any of it. Workers see their own
cache entries on mountpoints outside it (:mod:`coldbrew.backends.containment`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("coldbrew")

PRIVATE_UMASK = 0o077

_PRIVATE_FILES = ("*.db", "*.db-wal", "*.db-shm", "*.db-journal", "*.json")


def secure_data_dir(path: Path) -> None:
    """Create ``path`` 0700 (or make an existing one so) and its databases 0600.

    Also sets the process's umask to 077: whatever the server creates from here on (SQLite's
    -wal and -shm files, which take the database's mode, S3 objects, logs, cache scratch) is
    private unless it is made shareable on purpose, as cache entries are for their workers.
    """
    os.umask(PRIVATE_UMASK)
    path.mkdir(parents=True, exist_ok=True)
    _restrict(path, 0o700)
    for pattern in _PRIVATE_FILES:
        for file in path.glob(pattern):
            _restrict(file, 0o600)
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            _restrict(child, 0o700)


def _restrict(path: Path, mode: int) -> None:
    try:
        st = path.lstat()
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) == mode:
        return
    if st.st_uid != os.geteuid():
        log.warning("%s belongs to uid %d, not the server's: its mode is left as it is", path, st.st_uid)
        return
    with contextlib.suppress(OSError):
        os.chmod(path, mode)
        log.info("restricted %s to mode %o", path, mode)
