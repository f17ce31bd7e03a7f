"""Default request decoding and response encoding: CSV, JSON, JSON Lines and NPY to and from numpy arrays.

These are the ``input_fn`` and ``output_fn`` a model gets when its ``code/inference.py`` does not
define them. Every malformed body is a :class:`BadRequest` naming what is wrong, so the client
sees a 4xx it can fix rather than a 500 from deep inside numpy.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from coldbrew.worker.errors import BadRequest, NotAcceptable, UnsupportedMediaType
from coldbrew.worker.media import ANY, CSV, JSON, JSONLINES, NPY, canonical

# --- decoding -----------------------------------------------------------------------------------


def decode(body: str | bytes, content_type: str) -> np.ndarray:
    """The default ``input_fn``: a 2-D float array from a CSV, JSON, JSON Lines or NPY body."""
    decoder = _DECODERS.get(canonical(content_type))
    if decoder is None:
        raise UnsupportedMediaType(
            f"Content-Type {_quoted(content_type)} is not supported by the default input_fn: send "
            f"{CSV}, {JSON}, {JSONLINES} or {NPY}, or define input_fn in code/inference.py"
        )
    if not body:
        raise BadRequest("the request body is empty")
    return decoder(body)


def _decode_csv(body: str | bytes) -> np.ndarray:
    # numpy's C parser reads a well-formed body about 4x faster than the loop below (a 6 MB batch
    # transform payload: 27 ms against 119 ms); whatever it refuses (an empty field, which is a
    # missing value here, or an error to explain) goes through the loop, which says what is wrong.
    if body.isspace():
        raise BadRequest("the CSV body has no rows")
    try:
        rows = np.loadtxt(
            io.StringIO(body) if isinstance(body, str) else io.BytesIO(body),
            delimiter=",", dtype=np.float64, comments=None, encoding="utf-8", ndmin=2,
        )  # fmt: skip
    except ValueError:  # UnicodeDecodeError included
        return _decode_csv_checked(body)
    return rows


def _decode_csv_checked(body: str | bytes) -> np.ndarray:
    text = body if isinstance(body, str) else _utf8(body)
    rows: list[list[float]] = []
    width = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        if not rows:
            width = len(fields)
        elif len(fields) != width:
            raise BadRequest(
                f"CSV row {number} has {_values(len(fields))} but the first row has {width}: "
                "every row must have the same number of features"
            )
        try:
            # An empty field is a missing value, as numpy.genfromtxt and the XGBoost container read it.
            rows.append([float(field) if field.strip() else math.nan for field in fields])
        except ValueError:
            column, bad = next((i, f) for i, f in enumerate(fields, start=1) if not _is_number(f))
            raise BadRequest(
                f"CSV row {number}, column {column}: {_quoted(bad.strip())} is not a number "
                "(send rows of numbers, without a header row)"
            ) from None
    if not rows:
        raise BadRequest("the CSV body has no rows")
    return np.array(rows, dtype=np.float64)


def _decode_json(body: str | bytes) -> np.ndarray:
    return rows_from_json(parse_json(body))


def parse_json(body: str | bytes) -> Any:
    """The parsed JSON body, or a 400 naming the syntax error."""
    try:
        return json.loads(body)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the 4,300-digit int limit
        raise BadRequest(f"the body is not valid JSON: {_bounded(exc)}") from None
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None


def rows_from_json(payload: Any) -> np.ndarray:
    """A parsed JSON body as a 2-D float array: a list of rows, a single row, or either under
    ``"instances"`` or ``"inputs"`` (TensorFlow Serving's and the SageMaker containers' keys)."""
    if isinstance(payload, dict):
        for key in ("instances", "inputs"):
            if key in payload:
                payload = payload[key]
                break
        else:
            raise BadRequest(
                'a JSON object body needs an "instances" or "inputs" key; '
                "or send a list of rows, or a single row"
            )
    if not isinstance(payload, list) or not payload:
        raise BadRequest("JSON input must be a non-empty list of rows of numbers, or a single row")
    if isinstance(payload[0], list):
        width = len(payload[0])
        for number, row in enumerate(payload, start=1):
            if not isinstance(row, list):
                raise BadRequest(f"JSON row {number} is not a list, but row 1 is")
            if len(row) != width:
                raise BadRequest(
                    f"JSON row {number} has {_values(len(row))} but row 1 has {width}: "
                    "every row must have the same number of features"
                )
    try:
        # null becomes NaN, the usual missing value for tree models.
        array = np.array(payload, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"JSON rows must hold only numbers: {_bounded(exc)}") from None
    return array.reshape(1, -1) if array.ndim == 1 else array


# Keys under which a JSON Lines object carries its row: "features" is what SageMaker's built-in
# algorithms read; the others match the JSON body's keys.
_JSONLINES_KEYS = ("features", "instances", "inputs")


def _decode_jsonlines(body: str | bytes) -> np.ndarray:
    text = body if isinstance(body, str) else _utf8(body)
    rows: list[Any] = []
    width = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise BadRequest(f"JSON Lines line {number} is not valid JSON: {_bounded(exc)}") from None
        except RecursionError:
            raise BadRequest(f"JSON Lines line {number}: {_TOO_DEEP}") from None
        if isinstance(value, dict):
            key = next((k for k in _JSONLINES_KEYS if k in value), None)
            if key is None:
                raise BadRequest(
                    f'JSON Lines line {number} is an object without a "features", "instances" or '
                    '"inputs" key: send one row of numbers, or an object holding it, per line'
                )
            value = value[key]
        # A line holds one row, or (under "instances") several.
        line_rows = value if isinstance(value, list) and value and isinstance(value[0], list) else [value]
        for row in line_rows:
            if not isinstance(row, list) or not row:
                raise BadRequest(f"JSON Lines line {number} is not a non-empty list of numbers")
            if not rows:
                width = len(row)
            elif len(row) != width:
                raise BadRequest(
                    f"JSON Lines line {number} has {_values(len(row))} but the first row has {width}: "
                    "every row must have the same number of features"
                )
            rows.append(row)
    if not rows:
        raise BadRequest("the JSON Lines body has no rows")
    try:
        return np.array(rows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"JSON Lines rows must hold only numbers: {_bounded(exc)}") from None


def _decode_npy(body: str | bytes) -> np.ndarray:
    raw = body.encode() if isinstance(body, str) else body
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as exc:
        # With pickles refused, numpy only parses: whatever it raises on a hostile header or a
        # truncated archive (ValueError, OverflowError, a tokenizer's TokenError, BadZipFile, ...)
        # is the body's fault, never the model's.
        raise BadRequest(f"the body is not a valid .npy array: {_bounded(exc)}") from None
    if not isinstance(array, np.ndarray):
        if hasattr(array, "close"):
            array.close()
        raise BadRequest("the body is an .npz archive; send a single .npy array")
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise BadRequest(
            f"the .npy array holds {array.dtype} values; the default input_fn takes numbers "
            "(bool, integer or float arrays), or define input_fn in code/inference.py"
        )
    return array.reshape(1, -1) if array.ndim <= 1 else array


_NUMERIC_KINDS = frozenset("biuf")
_TOO_DEEP = "the JSON body nests arrays or objects too deeply to be a model input"


def _quoted(value: str, limit: int = 100) -> str:
    """A client's value as a message quotes it: a 6 MB field is not echoed back."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."


def _bounded(exc: Exception, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


_DECODERS: dict[str, Callable[[str | bytes], np.ndarray]] = {
    CSV: _decode_csv,
    JSON: _decode_json,
    JSONLINES: _decode_jsonlines,
    NPY: _decode_npy,
}


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not valid UTF-8: {_bounded(exc)}") from None


def _values(count: int) -> str:
    return "1 value" if count == 1 else f"{count} values"


def _is_number(text: str) -> bool:
    if not text.strip():
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- encoding -----------------------------------------------------------------------------------


def encode(prediction: Any, accept: str) -> tuple[bytes, str]:
    """The default ``output_fn``: the prediction as JSON, CSV, JSON Lines or NPY, whichever ``accept``
    names first."""
    content_type = negotiate(accept)
    return _ENCODERS[content_type](prediction), content_type


def negotiate(accept: str) -> str:
    """The first type in ``accept`` the default encoders can write; JSON for a wildcard.

    Types are taken in the order listed; quality values are not weighed, because clients of an
    inference endpoint name one type (boto3's Accept is a single value).
    """
    for part in accept.split(","):
        wanted = canonical(part)
        if wanted in _ENCODERS:
            return wanted
        if wanted in (ANY, "application/*", ""):
            return JSON
        if wanted == "text/*":
            return CSV
    raise NotAcceptable(
        f"Accept {_quoted(accept)} is not supported by the default output_fn: ask for "
        f"{JSON}, {CSV}, {JSONLINES} or {NPY}, or define output_fn in code/inference.py"
    )


def _encode_json(prediction: Any) -> bytes:
    return json.dumps(prediction, default=_json_default).encode()


def _json_default(value: Any) -> Any:
    # numpy arrays and scalars (float32, int64, bool_) all know how to become plain Python.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"prediction of type {type(value).__name__} cannot be written as JSON")


_NUMBER_KINDS = frozenset("biuf")


def _encode_csv(prediction: Any) -> bytes:
    array = np.asarray(prediction)
    if array.ndim > 2:
        raise NotAcceptable(
            f"the prediction is {array.ndim}-D and text/csv holds at most 2-D: ask for {JSON} or {NPY}"
        )
    values = array.tolist()  # Python floats print with repr, so CSV round-trips exactly
    if array.dtype.kind in _NUMBER_KINDS and array.ndim == 1:
        # What csv.writer writes for numbers, 7x faster (a batch transform's million predictions).
        return ("\n".join(map(str, values)) + "\n").encode() if values else b""
    rows = [[values]] if array.ndim == 0 else [[v] for v in values] if array.ndim == 1 else values
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def _encode_jsonlines(prediction: Any) -> bytes:
    # One line per row (per element of the outer list); anything that is not a sequence, such as
    # a dict, is one line.
    values = prediction.tolist() if hasattr(prediction, "tolist") else prediction
    items = values if isinstance(values, (list, tuple)) else [values]
    return "".join(json.dumps(item, default=_json_default) + "\n" for item in items).encode()


def _encode_npy(prediction: Any) -> bytes:
    out = io.BytesIO()
    np.save(out, np.asarray(prediction), allow_pickle=False)
    return out.getvalue()


_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    JSON: _encode_json,
    CSV: _encode_csv,
    JSONLINES: _encode_jsonlines,
    NPY: _encode_npy,
}
