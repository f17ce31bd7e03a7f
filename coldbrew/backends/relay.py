"""The relay between the gateway and a user's own server (``exec:`` images).

A user's server listens on TCP, as SageMaker's container contract says, but it runs in a network
namespace of its own (:mod:`coldbrew.backends.user_server`), where no other process of the host
can reach its port. This process runs in the same namespace: it accepts on a Unix socket in the
tenant's private run directory, which the gateway reaches because it is a file, not a network
address, and pipes each connection's bytes to and from ``127.0.0.1:PORT``, one TCP connection per
accepted one, so keep-alive connections stay keep-alive and concurrent ones stay concurrent.

``python -m coldbrew.backends.relay SOCKET PORT SERVER_PID``: it exits when the server does
(followed through a pidfd) and, being in the server's process group, with it when the gateway
stops it; the gateway has the kernel kill it when the gateway itself dies (``PR_SET_PDEATHSIG``).
It imports only the standard library (and uvloop when installed): it starts with every cold start
of an ``exec:`` server, so it must start fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

CHUNK = 65536
"""Read size per direction. Together with the transports' write buffer limits (64 KiB by
default, waited for with ``drain``), what one connection holds in the relay is bounded: a slow
reader slows its writer instead of filling the relay's memory."""


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until EOF, then half-close ``writer``: the other direction
    goes on (a client may shut its side down and still read the response)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        # One side is gone: neither direction can complete, so end both.
        writer.transport.abort()


async def _relay(port: int, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        # The server is not listening (yet, while it starts; or no more): the gateway sees the
        # connection close with nothing read, as from a worker that is not up.
        client_writer.transport.abort()
        return
    try:
        await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))
    finally:
        for writer in (client_writer, server_writer):
            writer.close()


async def serve(socket_path: str, port: int, server_pid: int) -> None:
    """Relay connections on ``socket_path`` to ``127.0.0.1:port`` until ``server_pid`` exits."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    try:
        pidfd = os.pidfd_open(server_pid)
    except ProcessLookupError:
        return
    loop.add_reader(pidfd, done.set)
    tasks: set[asyncio.Task[None]] = set()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)  # a hard reference, so a connection's task is not collected mid-relay
        try:
            await _relay(port, reader, writer)
        finally:
            tasks.discard(task)

    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    listener = await asyncio.start_unix_server(accepted, socket_path, backlog=1024)
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, done.set)
    async with listener:
        await done.wait()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m coldbrew.backends.relay SOCKET PORT SERVER_PID", file=sys.stderr)
        return 2
    socket_path, port, server_pid = argv[0], int(argv[1]), int(argv[2])
    os.umask(0o077)  # the socket is the gateway's and the tenant's only (its directory is too)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(socket_path, port, server_pid))
    else:
        uvloop.run(serve(socket_path, port, server_pid))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
