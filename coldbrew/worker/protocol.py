"""HTTP/1.1 over one connection, parsed with httptools: the worker's whole web server.

Why not uvicorn: measured over a Unix socket with a raw keep-alive client, an echo request
through uvicorn (httptools, uvloop) and a bare ASGI callable takes ~28 µs, through a bare
httptools protocol ~7 µs; and uvicorn writes the response head and body in two writes, which
cost an httpx client ~80 µs more per request. The worker has one client (the gateway), two
routes and no streaming, so the subset of HTTP/1.1 it needs is small:

- keep-alive (the default), ``Connection: close`` and HTTP/1.0, chunked request bodies,
  ``Expect: 100-continue``, pipelined requests (answered strictly in order);
- a malformed request gets a 400 and the connection is closed.

Requests on one connection are handled one at a time. Inline (``executor`` None) the handler
runs inside ``data_received``; with a thread pool the connection stops reading until its request
is answered, so concurrency comes from the gateway opening several connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from http import HTTPStatus
from typing import cast

import httptools

from coldbrew.worker.app import Request, Response, WorkerApp, error_response

logger = logging.getLogger(__name__)

_REASONS = {int(s): s.phrase.encode() for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_INVOCATIONS = b"/invocations"


class ServerState:
    """What the server's shutdown needs to see of every connection."""

    def __init__(self) -> None:
        self.connections: set[HttpConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.shutting_down = False
        self.connection_lost = asyncio.Event()
        """Set whenever a connection goes away, so shutdown waits for the last one without polling."""


class HttpConnection(asyncio.Protocol):
    def __init__(self, app: WorkerApp, executor: Executor | None, state: ServerState) -> None:
        self.app = app
        self.executor = executor
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: deque[Request] = deque()
        self.busy = False  # a request is in the predict pool
        self.closed = False
        self.in_message = False  # part of a request has arrived
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pending.clear()
        self.state.connections.discard(self)
        self.state.connection_lost.set()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "BadRequest: protocol upgrades are not supported")
            return
        except httptools.HttpParserError as exc:
            self._reject(400, f"BadRequest: malformed HTTP request: {exc}")
            return
        self._dispatch()

    # --- httptools callbacks (called inside feed_data) ----------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = True
        self._url = b""
        self._headers = {}
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        if self._headers.get(b"expect", b"").lower() == b"100-continue" and self.transport is not None:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        path = self._url.split(b"?", 1)[0]
        self.pending.append(
            Request(self.parser.get_method(), path, self._headers, body, self.parser.should_keep_alive())
        )

    # --- request handling ---------------------------------------------------------------------

    def idle(self) -> bool:
        return not (self.busy or self.pending or self.in_message)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def _dispatch(self) -> None:
        while self.pending and not self.busy and not self.closed:
            request = self.pending.popleft()
            # /ping stays inline so health checks answer while every predict thread is busy.
            if self.executor is None or request.path != _INVOCATIONS:
                self._respond(request, self.app.handle(request))
                continue
            self.busy = True
            if self.transport is not None:
                self.transport.pause_reading()
            task = asyncio.get_running_loop().create_task(self._handle_in_pool(request))
            self.state.tasks.add(task)
            task.add_done_callback(self.state.tasks.discard)

    async def _handle_in_pool(self, request: Request) -> None:
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(self.executor, self.app.handle, request)
        except Exception as exc:  # WorkerApp.handle does not raise; this is a bug of ours
            logger.exception("request handling failed")
            response = error_response(500, f"{type(exc).__name__}: {exc}")
        finally:
            self.busy = False
        self._respond(request, response)
        if not self.closed and self.transport is not None:
            self.transport.resume_reading()
            self._dispatch()

    def _respond(self, request: Request, response: Response) -> None:
        if self.closed or self.transport is None:
            return  # the client went away; nobody to answer
        keep_alive = request.keep_alive and not self.state.shutting_down
        self.transport.write(_serialize(response, head=request.method == b"HEAD", keep_alive=keep_alive))
        if not keep_alive:
            self.close()

    def _reject(self, status: int, message: str) -> None:
        logger.warning("closing connection: %s", message)
        if self.transport is not None and not self.closed:
            self.transport.write(_serialize(error_response(status, message), head=False, keep_alive=False))
        self.close()


def _serialize(response: Response, head: bool, keep_alive: bool) -> bytes:
    # One buffer, one write: a response split over two writes costs the client a second wake-up.
    status = response.status
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
    for name, value in response.headers:
        parts.append(b"%s: %s\r\n" % (name, value))
    parts.append(b"content-length: %d\r\n" % len(response.body))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if not head:
        parts.append(response.body)
    return b"".join(parts)


def connection_factory(
    app: WorkerApp, executor: Executor | None, state: ServerState
) -> Callable[[], HttpConnection]:
    return lambda: HttpConnection(app, executor, state)
