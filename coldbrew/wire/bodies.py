"""Reading request bodies with a size limit (raw ASGI, or one AWS JSON object) and parsing AWS
JSON without letting a hostile document reach a 5xx.

Every limit applies while the body is read: a client that declares or streams more than the limit
is refused having sent at most one chunk past it, and the refusal asks the server to close the
connection (:data:`CLOSE`), so the rest of the body is never read off the socket either.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import Receive

MAX_JSON_DEPTH = 64
"""Deepest nesting of objects and arrays an AWS JSON request may have. The deepest input shape
of any API coldbrew serves nests 10 levels (SageMaker's CreateAlgorithm); anything past this is
hostile, and would otherwise reach recursion limits in the validators or the JSON encoder."""

CLOSE = (b"connection", b"close")
"""The response header for a refusal sent before the body was read to its end: the client may
still be sending (or waiting on Expect: 100-continue), so the connection cannot carry another
request; uvicorn closes it after the response instead of reading and discarding the rest."""


class OversizeBody(Exception):
    """The body grew past its limit while it was read (the rest is never read into memory)."""


def declared_oversize(content_length: str | None, limit: int) -> bool:
    """Whether a Content-Length header already says the body is over ``limit``."""
    return content_length is not None and content_length.isdigit() and int(content_length) > limit


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole body, raising OversizeBody as soon as more than ``limit`` bytes have arrived
    (a chunked body has no Content-Length to check first)."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise OversizeBody
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def read_request_body(request: Request, limit: int) -> bytes:
    """A Starlette request's body, at most ``limit`` bytes (OversizeBody past it)."""
    if declared_oversize(request.headers.get("content-length"), limit):
        raise OversizeBody
    buffer = bytearray()
    async for chunk in request.stream():
        buffer += chunk
        if len(buffer) > limit:
            raise OversizeBody
    return bytes(buffer)


def parse_json_object(raw: bytes, error: Callable[[str], Exception]) -> dict[str, Any]:
    """An AWS JSON request body as a dict ({} when empty); ``error`` makes the API's
    SerializationException for anything that is not a JSON object coldbrew can safely handle.

    Non-finite numbers (``NaN``, ``Infinity``, ``1e400``) parse to floats here, so that the
    constraint checks can name the member they are in (:mod:`coldbrew.wire.constraints`)."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except RecursionError:
        raise error(_too_deep()) from None
    except ValueError as exc:
        # JSONDecodeError, UnicodeDecodeError, and the int-from-string limit (an integer of more
        # than 4,300 digits) are all ValueErrors.
        raise error(f"The request body is not valid JSON: {_first_line(exc)}.") from None
    if not isinstance(body, dict):
        raise error("The request body must be a JSON object.")
    if _deeper_than(body, MAX_JSON_DEPTH):
        raise error(_too_deep())
    return body


async def read_json_object(
    request: Request, error: Callable[[str], Exception], max_bytes: int
) -> dict[str, Any]:
    """The body as a dict, read at most ``max_bytes`` (``error`` past that, with the same
    SerializationException as a malformed body) and parsed by :func:`parse_json_object`."""
    try:
        raw = await read_request_body(request, max_bytes)
    except OversizeBody:
        raise error(too_large(max_bytes)) from None
    return parse_json_object(raw, error)


def too_large(limit: int) -> str:
    return f"The request body is larger than {limit:,} bytes, the most this API reads."


def _too_deep() -> str:
    return f"The request body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep."


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _deeper_than(value: Any, limit: int) -> bool:
    # Iterative, so the check itself has no recursion limit; only containers are visited.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
