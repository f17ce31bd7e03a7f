"""The relay between the gateway and an ``exec:`` server (``python -m coldbrew.backends.relay``),
run for real against a TCP server of the test's: keep-alive connections, many at once, half-close,
big bodies both ways, and its exit with the server it serves."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the relay follows its server by a pidfd")


FLOOD_MB = 128


class Upstream:
    """A TCP server on loopback: ``ECHO`` lines are answered line by line (a keep-alive
    exchange); ``FLOOD`` gets FLOOD_MB MiB as fast as the reader takes them; anything else is
    read to EOF and answered with its length and SHA-256 (so the answer comes only after the
    client's half-close)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.flooded = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            first = conn.recv(5)
            if first == b"FLOOD":
                chunk = b"x" * (1 << 20)
                for _ in range(FLOOD_MB):
                    conn.sendall(chunk)
                    self.flooded += len(chunk)
                return
            if first == b"ECHO\n":
                with conn.makefile("rwb") as stream:
                    for line in stream:
                        stream.write(line)
                        stream.flush()
                return
            digest, size = hashlib.sha256(first), len(first)
            while data := conn.recv(1 << 16):
                digest.update(data)
                size += len(data)
            conn.sendall(f"{size} {digest.hexdigest()}".encode())


@pytest.fixture()
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.sock.close()


@pytest.fixture()
def stand_in() -> Iterator[subprocess.Popen[bytes]]:
    """A process standing in for the exec: server, whose exit the relay follows."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait()


def start_relay(socket_path: Path, port: int, server_pid: int) -> subprocess.Popen[bytes]:
    relay = subprocess.Popen(
        [sys.executable, "-S", "-m", "coldbrew.backends.relay", str(socket_path), str(port), str(server_pid)]
    )
    deadline = time.monotonic() + 30
    while not socket_path.exists():
        assert relay.poll() is None, "the relay exited at start"
        assert time.monotonic() < deadline, "the relay did not listen"
        time.sleep(0.01)
    return relay


def connect(socket_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(socket_path))
    return sock


@pytest.fixture()
def relay_process(
    tmp_path: Path, upstream: Upstream, stand_in: subprocess.Popen[bytes]
) -> Iterator[subprocess.Popen[bytes]]:
    process = start_relay(tmp_path / "relay.sock", upstream.port, stand_in.pid)
    yield process
    process.kill()
    process.wait()


@pytest.fixture()
def relay(tmp_path: Path, relay_process: subprocess.Popen[bytes]) -> Path:
    return tmp_path / "relay.sock"


def test_a_keep_alive_connection_stays_one_connection(relay: Path, upstream: Upstream) -> None:
    with connect(relay) as sock, sock.makefile("rwb") as stream:
        stream.write(b"ECHO\n")
        for i in range(100):
            stream.write(b"request %d\n" % i)
            stream.flush()
            assert stream.readline() == b"request %d\n" % i
    assert upstream.connections == 1


def test_half_close_and_big_bodies(relay: Path) -> None:
    body = bytes(range(256)) * (32 * 1024)  # 8 MiB, more than any buffer on the way
    with connect(relay) as sock:
        sock.sendall(body)
        sock.shutdown(socket.SHUT_WR)  # the answer comes only after this reaches the server
        answer = b""
        while data := sock.recv(1 << 16):
            answer += data
    assert answer.decode() == f"{len(body)} {hashlib.sha256(body).hexdigest()}"


def test_a_reader_that_does_not_read_holds_its_writer_back(
    relay: Path, relay_process: subprocess.Popen[bytes], upstream: Upstream
) -> None:
    with connect(relay) as sock:
        sock.sendall(b"FLOOD")
        # Until the server's writes block: what is on the way fills the sockets' buffers, and
        # the relay reads no more than it has written.
        last, deadline = -1, time.monotonic() + 30
        while upstream.flooded != last and time.monotonic() < deadline:
            last = upstream.flooded
            time.sleep(0.5)
        assert upstream.flooded < FLOOD_MB << 20
        assert psutil.Process(relay_process.pid).memory_info().rss < 64 << 20
        received = 0
        while data := sock.recv(1 << 20):
            received += len(data)
    assert received == FLOOD_MB << 20


def test_many_connections_at_once(relay: Path, upstream: Upstream) -> None:
    def exchange(i: int) -> bytes:
        with connect(relay) as sock, sock.makefile("rwb") as stream:
            stream.write(b"ECHO\n")
            answers = b""
            for j in range(5):
                stream.write(b"%d-%d\n" % (i, j))
                stream.flush()
                answers += stream.readline()
            return answers

    # All open at once: each exchange holds its connection until its last answer.
    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(exchange, range(200)))
    assert results == [b"".join(b"%d-%d\n" % (i, j) for j in range(5)) for i in range(200)]
    assert upstream.connections == 200


def test_a_server_that_does_not_listen_closes_the_connection(
    tmp_path: Path, stand_in: subprocess.Popen[bytes]
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    relay = start_relay(tmp_path / "r.sock", port, stand_in.pid)
    try:
        with connect(tmp_path / "r.sock") as sock:
            sock.sendall(b"GET /ping HTTP/1.1\r\n\r\n")
            assert sock.recv(100) == b""
        assert relay.poll() is None  # and goes on relaying (the server may listen later)
    finally:
        relay.kill()
        relay.wait()


def test_the_relay_exits_with_its_server(
    tmp_path: Path, upstream: Upstream, stand_in: subprocess.Popen[bytes]
) -> None:
    socket_path = tmp_path / "relay.sock"
    relay = start_relay(socket_path, upstream.port, stand_in.pid)
    stand_in.kill()
    stand_in.wait()
    assert relay.wait(timeout=30) == 0
    assert not socket_path.exists()
