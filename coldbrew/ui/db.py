"""Read-only SQLite connections for the dashboard's reads, one per thread and file.

The control store serialises its own connection behind a lock that control calls hold; the UI's
reads are separate read-only connections instead (WAL: they never wait for a writer, and writers
never wait for them), opened once per worker thread. Every read runs in a thread, never on the
event loop.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


class ReadOnly:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection | None:
        """This thread's connection; None while the file does not exist yet."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if not self.path.exists():
                return None
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
        return conn

    def tables(self) -> set[str]:
        conn = self.connection()
        if conn is None:
            return set()
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
