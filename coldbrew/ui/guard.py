"""Who a dashboard request is from, and whether it may change anything.

Every request is resolved to a session (made anonymous on first sight when authentication is off;
required, with a key that still exists and may ``coldbrew:ViewDashboard``, when it is on) and a
:class:`Viewer`. A request that
changes something must carry the session's CSRF token and, if the browser says where it comes from
(``Origin``, ``Sec-Fetch-Site``), come from the dashboard's own origin.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from starlette.requests import Request

from coldbrew.auth.actions import DASHBOARD_ACTION
from coldbrew.auth.keys import AccessKey, KeyRing
from coldbrew.auth.policy import Decision
from coldbrew.auth.signature import same
from coldbrew.ui.access import Viewer
from coldbrew.ui.login_limit import LoginLimiter
from coldbrew.ui.sessions import COOKIE, Session, Sessions, csrf_matches

CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Who:
    session: Session
    viewer: Viewer
    fresh: bool
    """The session was made for this request: its cookie must be set on the response."""


class Guard:
    def __init__(
        self, sessions: Sessions, keys: KeyRing | None, region: str, account: str, limiter: LoginLimiter
    ) -> None:
        self.sessions, self.keys, self.region, self.account = sessions, keys, region, account
        self.limiter = limiter

    @property
    def auth_enabled(self) -> bool:
        return self.keys is not None

    def resolve(self, request: Request) -> Who | None:
        """The request's session and viewer; None when authentication is on and it has no valid
        session (the caller sends it to the login form)."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        if self.keys is None:
            if session is None:
                return Who(self.sessions.new(None), Viewer(None, self.region, self.account), True)
            return Who(session, Viewer(None, self.region, self.account), False)
        if session is None or session.key_id is None:
            return self._basic(request)
        key = self.keys.get(session.key_id)
        viewer = Viewer(key, self.region, self.account) if key is not None else None
        if viewer is None or not viewer.can(DASHBOARD_ACTION):  # deleted since the login
            self.sessions.end(session.id)
            return None
        return Who(session, viewer, False)

    def login(self, key_id: str, secret: str, address: str) -> AccessKey | None:
        """The key these credentials are, if they are right and its policy lets it use the dashboard.
        A wrong key id or secret counts against ``address`` (the caller checks it may try first)."""
        assert self.keys is not None
        key = self.keys.get(key_id) if key_id else None
        if key is None or not same(key.secret_access_key, secret):
            self.limiter.failed(address)
            return None
        self.limiter.succeeded(address)
        return key if key.policy.decide(DASHBOARD_ACTION, None) is Decision.ALLOWED else None

    def _basic(self, request: Request) -> Who | None:
        """HTTP Basic with a key id and secret, for scripts reading ``/ui/api/`` (``curl -u``). Its
        session is of this request only: its CSRF token is never told, so it cannot act."""
        header = request.headers.get("authorization", "")
        if request.method not in ("GET", "HEAD") or not header.startswith("Basic "):
            return None
        try:
            key_id, _, secret = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        address = request.client.host if request.client is not None else "unknown"
        if self.limiter.retry_after(address) is not None:
            return None  # guessing through Basic is bounded as through the form
        key = self.login(key_id, secret, address)
        if key is None:
            return None
        session = Session("", key.access_key_id, secrets.token_urlsafe(32), 0.0)
        return Who(session, Viewer(key, self.region, self.account), False)

    def anonymous(self, request: Request) -> Who:
        """A session for the login form itself (its CSRF token), kept if the browser has one."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is not None:
            return Who(session, Viewer(None, self.region, self.account), False)
        return Who(self.sessions.new(None), Viewer(None, self.region, self.account), True)


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True  # a browser sends it on every cross-origin POST; its absence is a same-origin one
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def csrf_ok(who: Who, request: Request, form_token: str | None = None) -> bool:
    token = request.headers.get(CSRF_HEADER) or form_token
    return same_origin(request) and csrf_matches(who.session, token)
