"""Reading request bodies with a size limit: raw (ASGI), or as one AWS JSON object."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import Receive


async def read_json_object(
    request: Request, error: Callable[[str], Exception], max_bytes: int | None = None
) -> dict[str, Any]:
    """The body as a dict ({} when empty). ``error`` makes the API's SerializationException;
    past ``max_bytes`` the read stops there, so a huge body is refused without being held."""
    if max_bytes is None:
        raw = bytes(await request.body())
    else:
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) > max_bytes:
                raise error(f"The request body is larger than {max_bytes} bytes.")
        raw = bytes(buffer)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise error("The request body must be a JSON object.")
    return body


class OversizeBody(Exception):
    """The body grew past its limit while it was read (the rest is never read into memory)."""


async def read_body(receive: Receive, limit: int) -> bytes:
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
