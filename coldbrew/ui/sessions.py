"""Browser sessions: a random id in an HttpOnly, SameSite=Strict cookie, the rest on the server.

A browser cannot sign SigV4, so the dashboard takes an access key id and secret once (checked
against the same key ring the gateway uses) and from then on knows the browser by a session id:
256 random bits, held server-side with the key id it stands for, its CSRF token and when it was last
seen. Nothing derived from the secret leaves the server. Logging out, an idle period past
``IDLE_S`` or deleting the key ends the session; a restart does not: logged-in sessions are kept in
the data dir (``ui-sessions.db``, mode 0600) under the SHA-256 of their id, so the file alone does
not give anyone a session, and logging out still ends one for good (unlike a signed cookie, which
stays valid until it expires). Expired ones are purged when the server starts and on each login.
Writes happen on login, logout, expiry and at most every ``TOUCH_S`` per session: callers run
these methods in a worker thread, never on the event loop.

With authentication off there is still a session (anonymous), for its CSRF token: a page on another
site must not be able to make a browser on this machine delete an endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

COOKIE = "coldbrew_session"
IDLE_S = 8 * 3600
MAX_SESSIONS = 10_000
"""Oldest sessions are forgotten past this many (a bound on what unauthenticated visitors cost)."""
TOUCH_S = 60.0
"""How stale a kept session's last-seen time may be on disk (its expiry is hours)."""
FILE_NAME = "ui-sessions.db"


@dataclass
class Session:
    id: str
    key_id: str | None
    """None: anonymous (authentication off, or not logged in yet)."""
    csrf: str
    last_seen: float
    """Unix seconds."""
    saved_seen: float = 0.0
    """``last_seen`` as last written to the file (logged-in sessions only)."""


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionFile:
    """Logged-in sessions on disk, by the SHA-256 of their id; readable by the server's user only."""

    def __init__(self, path: Path) -> None:
        # Created 0600 before SQLite opens it (its journal takes the same mode).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS sessions (digest TEXT PRIMARY KEY, key_id TEXT NOT NULL, "
            "csrf TEXT NOT NULL, last_seen REAL NOT NULL)"
        )

    def load(self, now: float) -> list[tuple[str, Session]]:
        self.purge(now)
        rows = self._conn.execute(
            "SELECT digest, key_id, csrf, last_seen FROM sessions ORDER BY last_seen"
        ).fetchall()
        return [(d, Session("", key, csrf, seen, seen)) for d, key, csrf, seen in rows]

    def save(self, digest: str, session: Session) -> None:
        assert session.key_id is not None
        self._conn.execute(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?)",
            [digest, session.key_id, session.csrf, session.last_seen],
        )
        session.saved_seen = session.last_seen

    def delete(self, digest: str) -> None:
        self._conn.execute("DELETE FROM sessions WHERE digest = ?", [digest])

    def purge(self, now: float) -> None:
        self._conn.execute("DELETE FROM sessions WHERE last_seen < ?", [now - IDLE_S])


class Sessions:
    """Sessions by the digest of their id; logged-in ones also in ``file`` when there is one."""

    def __init__(self, file: SessionFile | None = None, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._file = file
        if file is not None:
            for digest, session in file.load(clock()):
                self._sessions[digest] = session

    def new(self, key_id: str | None) -> Session:
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), key_id, secrets.token_urlsafe(32), now)
        digest = _digest(session.id)
        with self._lock:
            self._sessions[digest] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
            if self._file is not None and key_id is not None:
                self._file.purge(now)
                self._file.save(digest, session)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        now = self._clock()
        digest = _digest(session_id)
        with self._lock:
            session = self._sessions.get(digest)
            if session is None:
                return None
            if now - session.last_seen > IDLE_S:
                del self._sessions[digest]
                if self._file is not None and session.key_id is not None:
                    self._file.delete(digest)
                return None
            session.id = session_id  # a session read back from the file knows only the digest
            session.last_seen = now
            self._sessions.move_to_end(digest)
            if self._file is not None and session.key_id is not None and now - session.saved_seen > TOUCH_S:
                self._file.save(digest, session)
            return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            digest = _digest(session_id)
            with self._lock:
                self._sessions.pop(digest, None)
                if self._file is not None:
                    self._file.delete(digest)


def csrf_matches(session: Session, provided: str | None) -> bool:
    return bool(provided) and hmac.compare_digest(session.csrf.encode(), (provided or "").encode())


def cookie_header(session: Session | None, secure: bool) -> str:
    """The Set-Cookie value for ``session`` (None: clear the cookie)."""
    value, age = (session.id, IDLE_S) if session is not None else ("", 0)
    parts = [f"{COOKIE}={value}", "Path=/ui", "HttpOnly", "SameSite=Strict", f"Max-Age={age}"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
