"""A lean HTTP/1.1 client for the gateway's persistent connections to its workers.

The invoke path spends most of its own time here, so it is kept to the minimum: asyncio streams,
httptools' C parser (already uvicorn's), and a small pool of keep-alive connections per worker.
It speaks to coldbrew's own workers and to users' servers (``exec:``), so it handles whatever
HTTP/1.1 framing they answer with (Content-Length, chunked, or close-delimited).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

import httptools


class WorkerConnectionError(Exception):
    """The connection to the worker failed: it died, or closed the connection mid-request."""

    def __init__(self, message: str, before_response: bool = False, unsent: bool = False) -> None:
        super().__init__(message)
        self.before_response = before_response
        """Nothing of a response arrived: on a reused idle connection, the request may be resent."""
        self.unsent = unsent
        """The request never reached the worker (it refused the connection): another may take it."""


@dataclass
class WorkerResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class _Parse:
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    done: bool = False
    keep_alive: bool = False
    parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.done = True
        # Asked now: once the callback returns the parser is reset and answers "no" for every
        # response, which closed every connection after one request.
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        sock = writer.get_extra_info("socket")
        self._tcp = sock if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6) else None
        """A TCP connection's socket: its reads ACK at once (``_ack``)."""

    def _ack(self) -> None:
        # A server that writes a response's head and body apart (Python's http.server does) holds
        # the body until the head is ACKed (Nagle); a delayed ACK makes that ~40 ms. Linux clears
        # TCP_QUICKACK as it goes, so it is set again after each read.
        if self._tcp is not None:
            with contextlib.suppress(OSError):
                self._tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    async def request(self, head: bytes, body: bytes) -> tuple[WorkerResponse, bool]:
        self.writer.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.writer.write(body)
        parse = _Parse()
        parser = parse.parser = httptools.HttpResponseParser(parse)
        received = False
        while not parse.done:
            data = await self.reader.read(65536)
            self._ack()
            if not data:
                with contextlib.suppress(httptools.HttpParserError):
                    parser.feed_data(b"")  # ends a close-delimited body
                if parse.done:
                    break
                raise WorkerConnectionError("the worker closed the connection", before_response=not received)
            received = True
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise WorkerConnectionError(f"the worker sent an invalid HTTP response: {exc}") from None
        return WorkerResponse(
            parser.get_status_code(), parse.headers, b"".join(parse.chunks)
        ), parse.keep_alive

    def close(self) -> None:
        self.writer.close()


class WorkerClient:
    """Keep-alive connections to one worker at ``unix:/path`` or ``http://host:port``."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._idle: list[_Connection] = []
        self._closed = False

    async def _connect(self) -> _Connection:
        try:
            if self.address.startswith("unix:"):
                reader, writer = await asyncio.open_unix_connection(self.address[len("unix:") :])
            else:
                host, _, port = self.address.removeprefix("http://").rpartition(":")
                reader, writer = await asyncio.open_connection(host, int(port))
        except OSError as exc:
            raise WorkerConnectionError(
                f"cannot connect to the worker: {exc.strerror or exc}", before_response=True, unsent=True
            ) from None
        return _Connection(reader, writer)

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> WorkerResponse:
        lines = [f"{method} {path} HTTP/1.1", "Host: worker", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        reused = bool(self._idle)
        connection = self._idle.pop() if reused else await self._connect()
        try:
            response, keep_alive = await connection.request(head, body)
        except WorkerConnectionError as exc:
            connection.close()
            if reused and exc.before_response and not self._closed:
                # The worker may have closed this idle keep-alive connection just before we used
                # it; a fresh connection tells that apart from a dead worker (which refuses it).
                try:
                    return await self.request(method, path, headers, body)
                except WorkerConnectionError as again:
                    again.unsent = False  # whether the worker read the first attempt is unknown
                    raise
            raise
        except OSError as exc:
            connection.close()
            raise WorkerConnectionError(
                f"the connection to the worker failed: {exc.strerror or exc}"
            ) from None
        except BaseException:
            connection.close()  # cancelled mid-request: the connection's state is unknown
            raise
        if keep_alive and not self._closed:
            self._idle.append(connection)
        else:
            connection.close()
        return response

    async def aclose(self) -> None:
        self._closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()
