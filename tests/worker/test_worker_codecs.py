"""The default input_fn/output_fn: CSV, JSON and NPY to and from arrays, and their 4xx messages."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from coldbrew.worker import codecs
from coldbrew.worker.errors import BadRequest, NotAcceptable, UnsupportedMediaType


def test_csv_rows_of_floats() -> None:
    array = codecs.decode("1,2.5,-3\r\n4,5e-3,6\n\n", "text/csv; charset=utf-8")
    assert array.dtype == np.float64
    assert array.tolist() == [[1, 2.5, -3], [4, 0.005, 6]]


def test_csv_empty_field_is_missing_value() -> None:
    assert math.isnan(codecs.decode(b"1,,3", "text/csv")[0, 1])


def test_csv_reads_the_same_through_numpys_parser_and_the_checked_loop() -> None:
    # Bodies numpy's C parser takes, and ones it refuses that the checked loop still reads.
    for body in (b"1, 2\n3,4\n", b"5\n6\n", b"1,2,3", b"nan,inf,-0\n", b"1_000,2\n", b"\n1,2\r\n"):
        np.testing.assert_array_equal(
            codecs.decode(body, "text/csv"), codecs._decode_csv_checked(body), str(body)
        )
    assert codecs.decode(b"1,2,3", "text/csv").shape == (1, 3)
    # "#" is no comment in a CSV body: a value with one is no number.
    with pytest.raises(BadRequest, match="CSV row 1, column 2: '2 # c' is not a number"):
        codecs.decode(b"1,2 # c\n", "text/csv")
    with pytest.raises(BadRequest, match="not valid UTF-8"):
        codecs.decode(b"\xff,1\n", "text/csv")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1,2\n3\n", "CSV row 2 has 1 value but the first row has 2"),
        ("1,2\n\n3,4,5\n", "CSV row 3 has 3 values but the first row has 2"),
        ("1,x,3", "CSV row 1, column 2: 'x' is not a number"),
        ("\n\n", "the CSV body has no rows"),
        ("", "the request body is empty"),
    ],
)
def test_bad_csv(body: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        codecs.decode(body, "text/csv")
    assert info.value.status_code == 400


@pytest.mark.parametrize(
    "body",
    ["[[1, 2], [3, 4]]", '{"instances": [[1, 2], [3, 4]]}', '{"inputs": [[1, 2], [3, 4]]}'],
)
def test_json_shapes(body: str) -> None:
    assert codecs.decode(body, "application/json").tolist() == [[1, 2], [3, 4]]


def test_json_single_row_and_null() -> None:
    array = codecs.decode(b"[1, null, 3]", "application/json")
    assert array.shape == (1, 3) and math.isnan(array[0, 1])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[[1, 2], [3]]", "JSON row 2 has 1 value but row 1 has 2"),
        ("[[1, 2], 3]", "JSON row 2 is not a list"),
        ('[["a", 2]]', "JSON rows must hold only numbers"),
        ("{", "not valid JSON"),
        ("3", "non-empty list"),
        ("[]", "non-empty list"),
        ('{"data": [1]}', '"instances" or "inputs"'),
    ],
)
def test_bad_json(body: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        codecs.decode(body, "application/json")


def test_npy_round_trip_and_bad_npy() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6.0).reshape(2, 3))
    assert codecs.decode(buffer.getvalue(), "application/x-npy").tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(BadRequest, match=r"not a valid \.npy array"):
        codecs.decode(b"garbage", "application/x-npy")


def test_unsupported_content_type() -> None:
    with pytest.raises(UnsupportedMediaType, match="'image/png' is not supported") as info:
        codecs.decode(b"x", "image/png")
    assert info.value.status_code == 415


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("application/json", "application/json"),
        ("text/csv; charset=utf-8", "text/csv"),
        ("image/png, text/csv", "text/csv"),
        ("*/*", "application/json"),
        ("text/*", "text/csv"),
        ("application/x-npy", "application/x-npy"),
    ],
)
def test_negotiate(accept: str, chosen: str) -> None:
    assert codecs.negotiate(accept) == chosen


def test_negotiate_refuses_with_406() -> None:
    with pytest.raises(NotAcceptable, match="Accept 'image/png'") as info:
        codecs.negotiate("image/png")
    assert info.value.status_code == 406


def test_encode_json_and_csv() -> None:
    prediction = np.array([0.1, 2.0, 3.5], dtype=np.float32)
    body, content_type = codecs.encode(prediction, "application/json")
    assert content_type == "application/json" and body == b"[0.10000000149011612, 2.0, 3.5]"
    assert codecs.encode(np.array([1.5, 2.25]), "text/csv") == (b"1.5\n2.25\n", "text/csv")
    assert codecs.encode(np.array([[1, 2], [3, 4]]), "text/csv")[0] == b"1,2\n3,4\n"
    assert codecs.encode(np.array(["a,b", "c"]), "text/csv")[0] == b'"a,b"\nc\n'
    assert codecs.encode({"scores": np.arange(2)}, "application/json")[0] == b'{"scores": [0, 1]}'


def test_encode_csv_refuses_3d() -> None:
    with pytest.raises(NotAcceptable, match="3-D"):
        codecs.encode(np.zeros((2, 2, 2)), "text/csv")
