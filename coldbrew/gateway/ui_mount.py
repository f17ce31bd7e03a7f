"""The dashboard's place on the port: ``/ui`` and a browser's ``GET /`` go to it, all else to the API.

A browser cannot sign SigV4, so the dashboard is answered before the signature gate and keeps its
own sessions, checked against the same key ring and policies (:mod:`coldbrew.ui.guard`); the
gate's Host check (DNS rebinding) applies to it all the same. ``GET /`` is also S3's ListBuckets,
which AWS clients sign (or, anonymous, send without ``Accept: text/html``): only an unsigned
request that asks for HTML is redirected to ``/ui``. A request under ``/ui`` signed for a service
(path-style S3 of a bucket named ``ui``) is an API call and goes on to the API.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from coldbrew.auth.errors import HostNotAllowed
from coldbrew.gateway.auth_gate import HostCheck
from coldbrew.gateway.auth_responses import Wire, send_error
from coldbrew.gateway.service_router import service_of

PREFIX = "/ui"


def is_dashboard(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def wants_dashboard(method: str, path: str, query: bytes, headers: dict[bytes, bytes]) -> bool:
    """A browser opening the server's address: an unsigned ``GET /`` that accepts HTML."""
    if method not in ("GET", "HEAD") or path != "/":
        return False
    if b"authorization" in headers or query:
        return False
    return b"text/html" in headers.get(b"accept", b"")


class UiMount:
    def __init__(self, ui: ASGIApp, api: ASGIApp, hosts: HostCheck) -> None:
        self.ui, self.api, self.hosts = ui, api, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        # The invoke path pays one string comparison here, nothing more.
        if scope["type"] != "http" or not (path == "/" or is_dashboard(path)):
            await self.api(scope, receive, send)
            return
        headers = dict(scope["headers"])
        query = scope.get("query_string", b"")
        # A request signed for a service is an API call (path-style S3 of a bucket named "ui", say).
        if is_dashboard(path) and service_of(scope["method"], path, query.decode("latin-1"), headers) is None:
            host = headers.get(b"host", b"").decode("latin-1")
            if not self.hosts.allows(host):
                error = HostNotAllowed(
                    f"Host '{host[:100]}' is not a name this coldbrew server answers to (a DNS-rebinding "
                    f"guard); start it with --allowed-host (COLDBREW_ALLOWED_HOSTS) to allow it."
                )
                await send_error(send, error, Wire.PLAIN, path)
                return
            await self.ui(scope, receive, send)
            return
        if wants_dashboard(scope["method"], path, query, headers):
            await send({"type": "http.response.start", "status": 303, "headers": [(b"location", b"/ui")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.api(scope, receive, send)
