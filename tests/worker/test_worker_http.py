"""The worker's HTTP/1.1 server, spoken to over raw sockets: keep-alive, pipelining, framing, errors."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.worker.conftest import Worker, start_worker, write_code

ECHO = """
def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    data = body if isinstance(body, bytes) else body.encode()
    return data, content_type
"""


@pytest.fixture(scope="module", params=["inline", "pool"])
def echo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, socket_dir: Path
) -> Iterator[Worker]:
    model_dir = tmp_path_factory.mktemp("echo")
    write_code(model_dir, ECHO)
    args = ["--environment-concurrency", "2"] if request.param == "pool" else []
    worker = start_worker(model_dir, socket_dir, *args)
    yield worker
    worker.stop()


class Connection:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.reader: BinaryIO = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status_line = self.reader.readline()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, self.reader.read(int(headers.get("content-length", "0")))

    def at_eof(self) -> bool:
        return self.reader.read(1) == b""

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture
def conn(echo: Worker) -> Iterator[Connection]:
    assert echo.socket_path is not None
    connection = Connection(echo.socket_path)
    yield connection
    connection.close()


def post(
    body: bytes,
    *headers: str,
    path: str = "/invocations",
    version: str = "1.1",
    content_type: str = "text/plain",
) -> bytes:
    head = [f"POST {path} HTTP/{version}", "host: worker", f"content-type: {content_type}", *headers]
    if not any(h.lower().startswith("transfer-encoding") for h in headers):
        head.append(f"content-length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_keep_alive_and_pipelining_answer_in_order(conn: Connection) -> None:
    conn.send(post(b"one"))
    status, headers, body = conn.response()
    # The cores the invocation kept busy, for the gateway's scheduling (coldbrew.worker.cores).
    cores = float(headers.pop("x-coldbrew-cores"))
    assert 0.0 <= cores < 4.0
    assert (status, headers, body) == (200, {"content-type": "text/plain", "content-length": "3"}, b"one")
    # Three requests in one write: three responses, in order, on the same connection.
    conn.send(post(b"a") + post(b"bb") + b"GET /ping HTTP/1.1\r\nhost: w\r\n\r\n" + post(b"ccc"))
    assert [conn.response()[2] for _ in range(4)] == [b"a", b"bb", b"", b"ccc"]


def test_chunked_body_and_query_string(conn: Connection) -> None:
    conn.send(
        post(b"4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n", "transfer-encoding: chunked", path="/invocations?x=1")
    )
    assert conn.response()[2] == b"wikipedia"


def test_expect_100_continue(conn: Connection) -> None:
    conn.send(post(b"", "expect: 100-continue"))
    assert conn.reader.readline() == b"HTTP/1.1 100 Continue\r\n"
    assert conn.reader.readline() == b"\r\n"
    assert conn.response()[0] == 200


@pytest.mark.parametrize(("headers", "version"), [(("connection: close",), "1.1"), ((), "1.0")])
def test_connection_close(conn: Connection, headers: tuple[str, ...], version: str) -> None:
    conn.send(post(b"bye", *headers, version=version))
    status, response_headers, body = conn.response()
    assert (status, body, response_headers["connection"]) == (200, b"bye", "close")
    assert conn.at_eof()


def test_malformed_request_gets_400_and_close(conn: Connection) -> None:
    conn.send(b"NOT HTTP AT ALL\r\n\r\n")
    status, _, body = conn.response()
    assert status == 400 and b"malformed HTTP request" in body
    assert conn.at_eof()


def test_large_body_round_trip(conn: Connection) -> None:
    body = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    conn.send(post(body, content_type="application/octet-stream"))
    assert conn.response()[2] == body


def test_client_leaving_mid_request_does_not_hurt_the_worker(echo: Worker, conn: Connection) -> None:
    assert echo.socket_path is not None
    half = Connection(echo.socket_path)
    half.send(post(b"0123456789")[:-5])
    half.close()
    conn.send(post(b"still here"))
    assert conn.response()[2] == b"still here"
