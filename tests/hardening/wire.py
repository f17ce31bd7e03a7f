"""Raw requests for the hardening tests: AWS JSON calls with bodies boto3 would never send, and
chunked uploads over a plain socket, which show whether the server stopped reading."""

from __future__ import annotations

import select
import socket
from typing import Any

import httpx

from tests.support import ColdbrewServer

MiB = 1024 * 1024


def call(
    server: ColdbrewServer, target: str, body: bytes | str, content_type: str = "application/x-amz-json-1.1"
) -> httpx.Response:
    """POST / with ``X-Amz-Target: target`` and ``body`` as given."""
    data = body.encode() if isinstance(body, str) else body
    headers = {"X-Amz-Target": target, "Content-Type": content_type}
    return httpx.post(server.url + "/", content=data, headers=headers, timeout=60)


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    """Status, ``__type`` and message of an AWS JSON error."""
    document: dict[str, Any] = response.json()
    return response.status_code, document["__type"], document.get("message", "")


def chunked_until_refused(
    server: ColdbrewServer, path: str, headers: dict[str, str], most: int = 96 * MiB
) -> tuple[bytes, int]:
    """Upload a chunked body of up to ``most`` bytes (1 MiB chunks, never the final chunk) and
    stop sending as soon as the server answers or closes; return everything the server sent until
    it closed the connection, and how many body bytes were sent.

    A server that keeps reading the body after its answer never closes the connection, and the
    read here ends with the socket's timeout: a hang guard, not a timing assertion."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", "Transfer-Encoding: chunked"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    chunk = b"1," * (MiB // 2)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    try:
        while sent < most:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        received = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
    finally:
        sock.close()
    return received, sent


def status_line(raw: bytes) -> str:
    return raw.split(b"\r\n", 1)[0].decode("latin-1")


def headers_of(raw: bytes) -> dict[str, str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}
