"""Browser sessions: a random id in an HttpOnly, SameSite=Strict cookie, the rest on the server.

A browser cannot sign SigV4, so the dashboard takes an access key id and secret once (checked
against the same key ring the gateway uses) and from then on knows the browser by a session id:
256 random bits, held server-side in memory with the key id it stands for, its CSRF token and its
expiry. Nothing derived from the secret leaves the server. Logging out, an idle period past
``IDLE_S``, deleting the key, or restarting the server ends the session.

With authentication off there is still a session (anonymous), for its CSRF token: a page on another
site must not be able to make a browser on this machine delete an endpoint.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "coldbrew_session"
IDLE_S = 8 * 3600
MAX_SESSIONS = 10_000
"""Oldest sessions are forgotten past this many (a bound on what unauthenticated visitors cost)."""


@dataclass
class Session:
    id: str
    key_id: str | None
    """None: anonymous (authentication off, or not logged in yet)."""
    csrf: str
    last_seen: float


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def new(self, key_id: str | None) -> Session:
        session = Session(secrets.token_urlsafe(32), key_id, secrets.token_urlsafe(32), self._clock())
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.last_seen > IDLE_S:
                del self._sessions[session_id]
                return None
            session.last_seen = now
            self._sessions.move_to_end(session_id)
            return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(session_id, None)


def csrf_matches(session: Session, provided: str | None) -> bool:
    return bool(provided) and hmac.compare_digest(session.csrf.encode(), (provided or "").encode())


def cookie_header(session: Session | None, secure: bool) -> str:
    """The Set-Cookie value for ``session`` (None: clear the cookie)."""
    value, age = (session.id, IDLE_S) if session is not None else ("", 0)
    parts = [f"{COOKIE}={value}", "Path=/ui", "HttpOnly", "SameSite=Strict", f"Max-Age={age}"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
