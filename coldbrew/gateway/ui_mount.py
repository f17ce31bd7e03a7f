"""The dashboard's place on the port: ``/ui`` and a browser's ``GET /`` go to it, all else to the API.

A browser cannot sign SigV4, so the dashboard is answered before the signature gate and keeps its
own sessions, checked against the same key ring and policies (:mod:`coldbrew.ui.guard`); the
gate's Host check (DNS rebinding) applies to it all the same. ``GET /`` is also S3's ListBuckets,
which AWS clients sign (or, anonymous, send without ``Accept: text/html``): only an unsigned
request that asks for HTML is redirected to ``/ui``.

``/ui`` is also path-style S3 of a bucket named ``ui``. A request under it goes to the API when it is
signed for a service, or when it has an S3 request's shape that no browser gives a dashboard
request: a path none of the dashboard's routes serves (``/ui/model.tar.gz``), a PUT, a query on
``/ui`` itself (ListObjects' ``?list-type=2``), or an AWS SDK's or CLI's own headers (``x-amz-*``,
``amz-sdk-*``, which botocore sends unsigned too). Only an unsigned, header-less request for a
dashboard path (``GET /ui/cost``, say) is the dashboard's; to reach such a key, sign the request or
use virtual-host style.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from coldbrew.auth.errors import HostNotAllowed
from coldbrew.gateway.auth_gate import HostCheck
from coldbrew.gateway.auth_responses import Wire, send_error
from coldbrew.gateway.service_router import service_of

PREFIX = "/ui"


_PAGES = frozenset({PREFIX, "/ui/cost", "/ui/machine", "/ui/login", "/ui/logout"})
_TREES = ("/ui/api/", "/ui/static/")
_SDK_HEADERS = (b"x-amz-", b"amz-sdk-")


def is_dashboard(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def dashboard_route(path: str) -> bool:
    """A path one of the dashboard's routes serves (``coldbrew.ui.app``)."""
    if path in _PAGES or path.startswith(_TREES):
        return True
    name = path.removeprefix("/ui/endpoints/")
    return name != path and bool(name) and "/" not in name


def s3_shaped(method: str, path: str, query: bytes, headers: dict[bytes, bytes]) -> bool:
    """An unsigned request under ``/ui`` that is path-style S3 of bucket ``ui``, not the dashboard."""
    if method == "PUT" or not dashboard_route(path) or (path == PREFIX and query):
        return True
    return any(name.startswith(_SDK_HEADERS) for name in headers)


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
        # A request signed for a service, or shaped as S3's, is an API call (path-style S3 of a
        # bucket named "ui"): it gets what the same request to any other bucket gets.
        method = scope["method"]
        if (
            is_dashboard(path)
            and service_of(method, path, query.decode("latin-1"), headers) is None
            and not s3_shaped(method, path, query, headers)
        ):
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
