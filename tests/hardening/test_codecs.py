"""The default input_fn's .npy and JSON decoding, in process: every malformed body is a BadRequest
(the client's 400), whatever numpy or the JSON parser raise on it."""

from __future__ import annotations

import pytest

from coldbrew.worker.codecs import decode
from coldbrew.worker.errors import BadRequest


def _npy(header: dict[str, object] | bytes, data: bytes = b"") -> bytes:
    text = header if isinstance(header, bytes) else repr(header).encode()
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


def _header(**changes: object) -> dict[str, object]:
    return {"descr": "<f8", "fortran_order": False, "shape": (1,), **changes}


@pytest.mark.parametrize(
    "body",
    [
        _npy(_header(shape=(-1, 2))),
        _npy(_header(shape=(2,)), b"\x00" * 3),
        _npy(_header(descr="O"), b"x"),
        _npy(_header(descr="<U5"), b"\x00" * 20),
        _npy(_header(descr="bogus")),
        _npy(_header(descr=[("a", "<f8")]), b"\x00" * 8),
        _npy(_header(fortran_order=3), b"\x00" * 8),
        _npy(_header(shape=("a",))),
        _npy(_header(shape=(10**30,))),
        _npy(_header(descr="<c16"), b"\x00" * 16),
        _npy(_header(descr="<M8[s]"), b"\x00" * 8),
        _npy(_header(descr="|V8"), b"\x00" * 8),
        b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 65535,
        b"\x93NUMPY\x02\x00\xff\xff\xff\x7f{",
        b"\x93NUMPY\x01\x00\x10\x00" + b"(" * 16,
        b"\x93NUMPY\x01\x00\x10\x00{'a':" + b"[" * 200,
        b"PK\x03\x04" + b"\x00" * 30,
    ],
)
def test_malformed_npy_bodies_are_bad_requests(body: bytes) -> None:
    with pytest.raises(BadRequest) as excinfo:
        decode(body, "application/x-npy")
    assert len(excinfo.value.message) < 400


def test_numeric_npy_bodies_still_decode() -> None:
    assert decode(_npy(_header(), b"\x00" * 8), "application/x-npy").shape == (1, 1)
    assert decode(_npy(_header(descr="<i4", shape=(2, 3)), b"\x00" * 24), "application/x-npy").shape == (2, 3)
    assert decode(_npy(_header(shape=()), b"\x00" * 8), "application/x-npy").shape == (1, 1)


@pytest.mark.parametrize("content_type", ["application/json", "application/jsonlines"])
def test_json_too_deep_to_parse_is_a_bad_request(content_type: str) -> None:
    with pytest.raises(BadRequest, match="too deeply"):
        decode(b"[" * 100_000 + b"]" * 100_000, content_type)
