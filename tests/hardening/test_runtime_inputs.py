"""InvokeEndpoint bodies that once got the model's 500 (issue 14): a body the default input_fn cannot
decode is the client's 400 (SageMaker's ModelError, OriginalStatusCode 400), with a bounded message;
chunked bodies past the payload limit are refused as they are read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hardening.wire import MiB, chunked_until_refused, headers_of, status_line
from tests.support import ColdbrewServer, deploy_serverless, wait_for_status

ENDPOINT = "hard-runtime"
ROW = "0.03,0.05,0.06,0.02,-0.04,-0.03,-0.04,-0.002,0.02,-0.01"


@pytest.fixture(scope="module")
def endpoint(server: ColdbrewServer, sm: Any, model_archive: tuple[Path, Any]) -> Iterator[str]:
    deploy_serverless(sm, ENDPOINT, str(model_archive[0]))
    wait_for_status(sm, ENDPOINT, "InService")
    yield ENDPOINT


def _npy(header: bytes, data: bytes = b"") -> bytes:
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


def _invoke(server: ColdbrewServer, body: bytes, content_type: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/endpoints/{ENDPOINT}/invocations",
        content=body,
        headers={"Content-Type": content_type},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("body", "content_type", "problem"),
    [
        (b"\x93NUMPY garbage", "application/x-npy", "not a valid .npy array"),
        (
            _npy(b"{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }\n"),
            "application/x-npy",
            "not a valid .npy array",
        ),
        (
            _npy(b"{'descr': '<f8', 'fortran_order': False, 'shape': (" + b"(" * 50),
            "application/x-npy",
            "not a valid .npy array",
        ),
        (b"PK\x03\x04" + b"\x00" * 30, "application/x-npy", "not a valid .npy array"),
        (
            _npy(b"{'descr': '<U5', 'fortran_order': False, 'shape': (1,), }\n", b"\x00" * 20),
            "application/x-npy",
            "<U5 values",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", "too deeply"),
        (b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json", "too deeply"),
        (b"[" * 100_000, "application/jsonlines", "too deeply"),
        (b"[1, 1" + b"0" * 5000 + b"]", "application/json", "4300 digits"),
    ],
    ids=[
        "npy-garbage",
        "npy-huge-shape",
        "npy-bad-header",
        "npz-garbage",
        "npy-strings",
        "json-deep",
        "json-deep-instances",
        "jsonlines-deep",
        "json-bigint",
    ],
)
def test_undecodable_bodies_are_the_clients_400(
    server: ColdbrewServer, endpoint: str, body: bytes, content_type: str, problem: str
) -> None:
    response = _invoke(server, body, content_type)
    assert response.status_code == 424, response.text
    assert response.headers["x-amzn-errortype"] == "ModelError"
    error = response.json()
    assert error["OriginalStatusCode"] == 400
    assert error["message"].startswith("Received client error (400)")
    assert problem in error["OriginalMessage"]


def test_a_bad_value_is_not_echoed_whole(server: ColdbrewServer, endpoint: str) -> None:
    response = _invoke(server, ("x" * 2 * MiB + ",1,1,1,1,1,1,1,1,1").encode(), "text/csv")
    assert response.status_code == 424
    assert response.json()["OriginalStatusCode"] == 400
    assert len(response.content) < 2048


def test_chunked_bodies_past_the_limit_are_refused_as_they_are_read(
    server: ColdbrewServer, endpoint: str
) -> None:
    raw, sent = chunked_until_refused(
        server, f"/endpoints/{ENDPOINT}/invocations", {"Content-Type": "text/csv"}
    )
    assert status_line(raw) == "HTTP/1.1 400 Bad Request"
    assert headers_of(raw)["connection"] == "close"
    assert headers_of(raw)["x-amzn-errortype"] == "ValidationError"
    assert b"has oversize body." in raw
    assert sent < 96 * MiB
    assert _invoke(server, ROW.encode(), "text/csv").status_code == 200


def test_chunked_bodies_to_invoke_endpoint_async_are_refused_as_they_are_read(server: ColdbrewServer) -> None:
    raw, sent = chunked_until_refused(
        server, "/endpoints/any/async-invocations", {"Content-Type": "text/csv"}
    )
    assert status_line(raw) == "HTTP/1.1 400 Bad Request"
    assert headers_of(raw)["connection"] == "close"
    assert b"takes no request body" in raw
    assert sent < 96 * MiB


def test_a_long_endpoint_name_is_not_echoed_whole(server: ColdbrewServer) -> None:
    response = httpx.post(
        f"{server.url}/endpoints/{'x' * 20_000}/invocations",
        content=ROW,
        headers={"Content-Type": "text/csv"},
    )
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"] == "ValidationError"
    assert len(response.content) < 1024
