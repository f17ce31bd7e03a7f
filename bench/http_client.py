"""A small keep-alive HTTP/1.1 client on asyncio streams, for open-loop load from one process.

Why not httpx: an open loop must send each request at its arrival time, so the client's own CPU
decides how late it sends, and on this 2-core machine it shares the cores with the server it
measures. ``bench/burst.py`` at 10,000 invocations a minute measured httpx's AsyncClient at 3.8 ms of
CPU per request, more than the server and its workers spent. ``python bench/http_client.py``
compares the two on the same server (8 closed-loop clients, 2026-12-02): httpx 1.34 ms of client
CPU per request, this one 0.12-0.14 ms. It does only what the benchmarks need: POST with a fixed
body, responses with Content-Length or chunked, connections reused.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class HttpError(Exception):
    pass


class Client:
    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes, content_type: str) -> Response:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        reused = bool(self._idle)
        reader, writer = self._idle.pop() if reused else await self._connect()
        try:
            writer.write(head + body)
            response, keep = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, HttpError):
            writer.close()
            if not reused:
                raise
            # The server closed an idle connection: once more on a new one.
            reader, writer = await self._connect()
            writer.write(head + body)
            response, keep = await _read_response(reader)
        if keep:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return response

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and the headers (lower-cased names) of a response head."""
    lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise HttpError(f"bad status line {lines[0]!r}") from None
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    status, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        body = b"".join(chunks)
    else:
        raise HttpError("a response without Content-Length or chunked encoding")
    keep = headers.get("connection", "").lower() != "close"
    return Response(status, headers, body), keep


class BlockingClient:
    """One keep-alive connection on a blocking socket: single requests timed one after another.

    A latency measurement of a few milliseconds counts the client's own time too; httpx's sync
    client spends ~0.3-0.5 ms of it per request, this one ~0.03 ms, so the server's share shows.
    """

    def __init__(self, base_url: str, timeout_s: float = 60.0) -> None:
        parts = urlsplit(base_url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def post(self, path: str, body: bytes, content_type: str, accept: str | None = None) -> Response:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.address[0]}:{self.address[1]}\r\n"
            f"Content-Type: {content_type}\r\n"
            + (f"Accept: {accept}\r\n" if accept else "")
            + f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        reused = self._sock is not None
        if self._sock is None:
            self._sock = self._connect()
        try:
            self._sock.sendall(head + body)
            response, keep = self._read(self._sock)
        except (OSError, HttpError):
            self.close()
            if not reused:
                raise
            # The server closed the idle connection (its keep-alive timeout): once more, anew.
            self._sock = self._connect()
            self._sock.sendall(head + body)
            response, keep = self._read(self._sock)
        if not keep:
            self.close()
        return response

    @staticmethod
    def _read(sock: socket.socket) -> tuple[Response, bool]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise HttpError("the server closed the connection")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status, headers = _parse_head(head)
        if "content-length" not in headers:
            raise HttpError("a response without Content-Length")
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise HttpError("the server closed the connection mid-body")
            rest += chunk
        keep = headers.get("connection", "").lower() != "close"
        return Response(status, headers, rest[:length]), keep

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _compare() -> None:
    """Client CPU per request, httpx against this client, on the same server and endpoint."""
    import json
    import sys
    import tempfile
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import httpx

    from tests.support import ColdbrewServer, deploy_serverless, sklearn_archive, wait_for_status

    row, n, concurrency = b"0.03,0.05,0.06,0.02,-0.04,-0.03,-0.04,-0.002,0.02,-0.01", 3000, 8
    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-bench-client-"))
    archive, _ = sklearn_archive(tmp / "model.tar.gz", n_estimators=10)
    server = ColdbrewServer(tmp / "data", env={"COLDBREW_LOGS_ECHO": "false"}).start()
    try:
        sm = server.client()
        deploy_serverless(sm, "client", archive.as_uri(), memory=1024, max_concurrency=concurrency)
        wait_for_status(sm, "client", "InService")
        path = "/endpoints/client/invocations"

        async def with_httpx() -> None:
            headers = {"Content-Type": "text/csv"}
            async with httpx.AsyncClient(timeout=60) as client:

                async def one() -> None:
                    for _ in range(n // concurrency):
                        r = await client.post(server.url + path, content=row, headers=headers)
                        assert r.status_code == 200, r.text

                await asyncio.gather(*(one() for _ in range(concurrency)))

        async def with_this() -> None:
            client = Client(server.url)

            async def one() -> None:
                for _ in range(n // concurrency):
                    r = await client.post(path, row, "text/csv")
                    assert r.status == 200, r.text

            await asyncio.gather(*(one() for _ in range(concurrency)))
            await client.close()

        results = {}
        for name, run in (("httpx", with_httpx), ("bench.http_client", with_this)) * 2:
            cpu, wall = time.process_time(), time.perf_counter()
            asyncio.run(run())
            results.setdefault(name, []).append(
                {"client_cpu_ms_per_request": round((time.process_time() - cpu) * 1000 / n, 3),
                 "req_s": round(n / (time.perf_counter() - wall), 1)}
            )  # fmt: skip
        print(json.dumps(results, indent=2))
    finally:
        server.stop()


if __name__ == "__main__":
    _compare()
