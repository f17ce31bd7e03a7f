"""The relay between the gateway and a user's own server (``exec:`` images).

A user's server listens on TCP, as SageMaker's container contract says, but it runs in a network
namespace of its own (:mod:`coldbrew.backends.user_server`), where no other process of the host
can reach its port. This process runs in the same namespace: it accepts on a Unix socket in the
tenant's private run directory, which the gateway reaches because it is a file, not a network
address, and pipes each connection's bytes to and from ``127.0.0.1:PORT``, one TCP connection per
accepted one, so keep-alive connections stay keep-alive and concurrent ones stay concurrent. A
side that shuts down its writing half (EOF) is passed on as such (``shutdown(SHUT_WR)``), and the
other direction goes on. Each direction holds at most one read (:data:`CHUNK`) besides what the
kernel's socket buffers hold: a reader that does not read stops the relay reading its writer.

``python -S -m coldbrew.backends.relay SOCKET PORT SERVER_PID``: it exits when the server does
(followed through a pidfd) and, being in the server's process group, with it when the gateway
stops it; the gateway has the kernel kill it when the gateway itself dies (``PR_SET_PDEATHSIG``).
It starts with every cold start of an ``exec:`` server, so it starts fast: one selector loop over
the standard library's ``socket`` and ``selectors`` (asyncio alone takes ~60 ms to import), run
without ``site`` (which takes ~40 ms with many packages installed).
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import sys
import time

CHUNK = 65536
"""The most one direction of one connection reads before what it read has been written."""

_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class _Direction:
    """Bytes from ``source`` to ``sink``."""

    def __init__(self, source: socket.socket, sink: socket.socket) -> None:
        self.source = source
        self.sink = sink
        self.pending = memoryview(b"")
        self.source_done = False  # EOF read from source
        self.done = False  # ... and passed on to sink


class _Pair:
    """One accepted connection and its connection to the server."""

    def __init__(
        self, selector: selectors.BaseSelector, client: socket.socket, upstream: socket.socket
    ) -> None:
        self.selector = selector
        self.client = client
        self.upstream = upstream
        self.connecting = True
        self.closed = False
        self.up = _Direction(client, upstream)
        self.down = _Direction(upstream, client)
        self.registered: dict[socket.socket, int] = {}

    def handle(self, sock: socket.socket, events: int) -> None:
        if self.connecting:
            if sock is self.upstream and events & _WRITE:
                if self.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    # The server is not listening (yet, while it starts; or no more): the
                    # gateway sees the connection close with nothing read, as from a worker
                    # that is not up.
                    self.close()
                    return
                self.connecting = False
        else:
            # Written first: what was read waits for its sink before anything more is read.
            for direction in (self.up, self.down):
                if direction.sink is sock and events & _WRITE:
                    self._flush(direction)
            for direction in (self.up, self.down):
                if direction.source is sock and events & _READ and not self.closed:
                    self._read(direction)
        self.update()

    def _read(self, direction: _Direction) -> None:
        try:
            data = direction.source.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()  # reset: neither direction can complete
            return
        if direction.source is self.upstream:
            # ACK the server's segments at once: a server that writes a response's head and body
            # in two writes (Python's http.server does) would otherwise wait for a delayed ACK,
            # ~40 ms, before its body (Nagle's algorithm). Linux clears it as it goes: set per read.
            with contextlib.suppress(OSError):
                self.upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        if not data:
            direction.source_done = True
        else:
            direction.pending = memoryview(data)
        self._flush(direction)

    def _flush(self, direction: _Direction) -> None:
        if direction.pending:
            try:
                sent = direction.sink.send(direction.pending)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.close()
                return
            direction.pending = direction.pending[sent:]
        if not direction.pending and direction.source_done and not direction.done:
            direction.done = True
            with contextlib.suppress(OSError):
                direction.sink.shutdown(socket.SHUT_WR)

    def update(self) -> None:
        """Register each socket for what its two directions wait for; close when both are done."""
        if self.closed:
            return
        if self.up.done and self.down.done:
            self.close()
            return
        for sock in (self.client, self.upstream):
            events = 0
            if self.connecting:
                events = _WRITE if sock is self.upstream else 0
            else:
                for direction in (self.up, self.down):
                    if direction.source is sock and not direction.source_done and not direction.pending:
                        events |= _READ
                    if direction.sink is sock and direction.pending:
                        events |= _WRITE
            was = self.registered.get(sock, 0)
            if events == was:
                continue
            if not events:
                self.selector.unregister(sock)
            elif not was:
                self.selector.register(sock, events, self)
            else:
                self.selector.modify(sock, events, self)
            self.registered[sock] = events

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # A Unix socket closed with unread bytes resets its peer, which then cannot tell a
        # server that is not up from one that failed mid-request; read them, then close.
        with contextlib.suppress(OSError):
            for _ in range(16):
                if not self.client.recv(CHUNK):
                    break
        for sock in (self.client, self.upstream):
            if self.registered.get(sock):
                self.selector.unregister(sock)
            sock.close()
        self.registered.clear()


def _open(selector: selectors.BaseSelector, client: socket.socket, port: int) -> None:
    client.setblocking(False)
    upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    upstream.setblocking(False)
    # The gateway may write a request's head and body apart: each goes on at once.
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pair = _Pair(selector, client, upstream)
    result = upstream.connect_ex(("127.0.0.1", port))
    if result == 0:
        pair.connecting = False
    elif result != errno.EINPROGRESS:
        pair.close()  # refused: nothing listens yet
        return
    pair.update()


def serve(socket_path: str, port: int, server_pid: int) -> None:
    """Relay connections on ``socket_path`` to ``127.0.0.1:port`` until ``server_pid`` exits."""
    try:
        pidfd = os.pidfd_open(server_pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(1024)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, _READ, "accept")
    selector.register(pidfd, _READ, "exit")
    try:
        while True:
            for key, events in selector.select():
                if key.data == "exit":
                    return
                if key.data == "accept":
                    while True:
                        try:
                            client, _ = listener.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError as exc:
                            if exc.errno in (errno.EMFILE, errno.ENFILE):
                                # Out of descriptors: the backlog waits for connections to
                                # close, without spinning on a listener that stays readable.
                                time.sleep(0.01)
                                break
                            raise
                        _open(selector, client, port)
                else:
                    key.data.handle(key.fileobj, events)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -S -m coldbrew.backends.relay SOCKET PORT SERVER_PID", file=sys.stderr)
        return 2
    socket_path, port, server_pid = argv[0], int(argv[1]), int(argv[2])
    os.umask(0o077)  # the socket is the gateway's and the tenant's only (its directory is too)
    serve(socket_path, port, server_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
