"""The HTTP side of the embedded S3: a request as the handlers see it, and the responses they send.

Addressing: path-style (``/bucket/key``) always; virtual-hosted style (``bucket.<host>/key``) when
the Host header is a bucket name followed by one of the server's own host names.
"""

from __future__ import annotations

import asyncio
import email.utils
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote_to_bytes

import anyio
import anyio.to_thread
from starlette.types import Receive, Scope, Send

from coldbrew.wire.sigv4 import signed_region

from .body import ClientGone, RequestBody
from .multipart import Uploads
from .names import is_bucket_name
from .store import S3Store

T = TypeVar("T")
Headers = list[tuple[bytes, bytes]]

# The store's own threads: file and index I/O never waits behind (or holds up) the gateway's other
# thread-pool users, such as a model fetch that is itself reading from this store over HTTP. Made on
# first use, inside the running event loop, where anyio wants its limiters made.
_THREADS = 32
_LIMITER: anyio.CapacityLimiter | None = None


def _limiter() -> anyio.CapacityLimiter:
    global _LIMITER
    if _LIMITER is None:
        _LIMITER = anyio.CapacityLimiter(_THREADS)
    return _LIMITER


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(function, *args, limiter=_limiter())


@dataclass
class Request:
    method: str
    bucket: str | None
    key: str | None
    query: dict[str, str]
    headers: dict[str, str]
    receive: Receive
    region: str | None
    id: str = field(default_factory=lambda: secrets.token_hex(8).upper())

    body_read: bool = False

    @property
    def has_unread_body(self) -> bool:
        """Whether the client has (or, waiting on Expect: 100-continue, will have) sent a body
        nobody read: the connection then cannot carry another request."""
        if self.body_read:
            return False
        return self.headers.get("content-length", "0") != "0" or "chunked" in self.headers.get(
            "transfer-encoding", ""
        )

    async def _receive(self) -> Any:
        message = await self.receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            self.body_read = True
        return message

    async def disconnected(self) -> None:
        """Returns when the client has gone away (after reading off any body it sent)."""
        while (await self._receive())["type"] != "http.disconnect":
            pass

    @property
    def resource(self) -> str:
        return "/" + "/".join(p for p in (self.bucket, self.key) if p is not None)

    def body(self) -> RequestBody:
        return RequestBody(self._receive, self.headers)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def parse_request(scope: Scope, receive: Receive, hosts: Iterable[str]) -> Request:
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
    # From the raw path: keys are percent-encoded UTF-8 on the wire; one that is not UTF-8 keeps
    # surrogates, which the key check refuses.
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    path = unquote_to_bytes(raw.split(b"?", 1)[0]).decode("utf-8", "surrogateescape")
    bucket = virtual_host_bucket(headers.get("host", ""), hosts)
    if bucket is None:
        name, slash, rest = path.lstrip("/").partition("/") if path.startswith("/") else ("", "", "")
        bucket = name or None
        key = rest if slash and rest else None
    else:
        key = (path[1:] or None) if path.startswith("/") else None
    return Request(
        scope["method"], bucket, key, query, headers, receive, signed_region(headers.get("authorization"))
    )


def virtual_host_bucket(host: str, hosts: Iterable[str]) -> str | None:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.lower()
    for base in hosts:
        suffix = "." + base
        if name.endswith(suffix):
            bucket = name[: -len(suffix)]
            if is_bucket_name(bucket):
                return bucket
    return None


def http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


class Responder:
    """Sends one response; knows whether it has started (an error after that cannot be sent)."""

    def __init__(self, send: Send, request: Request) -> None:
        self._send = send
        self.request = request
        self.started = False

    def _base_headers(self) -> Headers:
        rid = self.request.id.encode()
        return [(b"x-amz-request-id", rid), (b"x-amz-id-2", rid), (b"server", b"coldbrew")]

    async def start(self, status: int, headers: Headers) -> None:
        self.started = True
        await self._send(
            {"type": "http.response.start", "status": status, "headers": self._base_headers() + headers}
        )

    async def send(
        self, status: int, body: bytes = b"", headers: Headers | None = None, length: int | None = None
    ) -> None:
        """A whole response. ``length`` overrides Content-Length (a HEAD says the object's size)."""
        all_headers = list(headers or [])
        all_headers.append((b"content-length", str(len(body) if length is None else length).encode()))
        await self.start(status, all_headers)
        await self._send(
            {"type": "http.response.body", "body": b"" if self.request.method == "HEAD" else body}
        )

    async def xml(self, body: bytes, status: int = 200, headers: Headers | None = None) -> None:
        await self.send(status, body, [(b"content-type", b"application/xml"), *(headers or [])])

    async def stream(self, status: int, headers: Headers, length: int, blocks: AsyncIterator[bytes]) -> None:
        """A body sent block by block. The ASGI server drops what is sent after the client went away
        without saying so, so a watcher waits for the disconnect and the rest is not even read."""
        gone = asyncio.ensure_future(self.request.disconnected())
        try:
            await self.start(status, [*headers, (b"content-length", str(length).encode())])
            async for block in blocks:
                if gone.done():
                    raise ClientGone()
                await self._send({"type": "http.response.body", "body": block, "more_body": True})
            await self._send({"type": "http.response.body", "body": b""})
        finally:
            gone.cancel()


@dataclass(frozen=True)
class Context:
    """What every handler needs: the store and whom it belongs to."""

    store: S3Store
    uploads: Uploads
    account_id: str
    region: str


def server_hosts(host: str) -> list[str]:
    """Names a client may reach this server by, as the base of virtual-hosted bucket addresses."""
    names = {"localhost", socket.gethostname()}  # not getfqdn(): a DNS lookup at start-up
    if host not in ("0.0.0.0", "::", ""):
        names.add(host)
    return sorted(n.lower() for n in names if n)
