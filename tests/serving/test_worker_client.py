"""The gateway's client for its workers, against a real HTTP server on a Unix socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

from coldbrew.backends.worker_client import WorkerClient


def test_keep_alive_connections_are_reused(tmp_path: Path) -> None:
    accepted = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
            await writer.drain()
            if reader.at_eof():
                break

    async def run() -> list[bytes]:
        socket = tmp_path / "w.sock"
        server = await asyncio.start_unix_server(handle, path=str(socket))
        client = WorkerClient(f"unix:{socket}")
        bodies = [(await client.request("POST", "/invocations", {}, b"x")).body for _ in range(5)]
        await client.aclose()
        server.close()
        return bodies

    assert asyncio.run(run()) == [b"ok"] * 5
    assert accepted == 1  # one connection for all five requests
