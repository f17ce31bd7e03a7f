"""Paging tokens: where a listing or a read of events left off, opaque to the client.

Events are ordered by ``(timestamp, id)``, streams and groups by their sort keys; a token holds
the key of the last item returned and a digest of the request it continues, so it cannot be
replayed against another query (InvalidParameterException, as CloudWatch answers a bad token).
GetLogEvents' tokens have CloudWatch's own shape, ``f/<56 digits>/s`` and ``b/<56 digits>/s``:
a direction and a position in the stream.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

from coldbrew.logs.errors import BAD_TOKEN, InvalidParameterException

Key = tuple[int, int]
"""An event's position: (timestamp in ms, id)."""

_TS_DIGITS, _ID_DIGITS = 20, 36
_EVENT_TOKEN = re.compile(rf"(?P<way>[fb])/(?P<ts>\d{{{_TS_DIGITS}}})(?P<id>\d{{{_ID_DIGITS}}})/s")


def digest(query: Any) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode(key: list[Any], query: Any) -> str:
    payload = json.dumps({"k": key, "q": digest(query)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode(token: str, query: Any) -> list[Any]:
    """The key a token from ``encode(key, query)`` holds; InvalidParameterException otherwise."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        key, made_for = payload["k"], payload["q"]
    except (ValueError, TypeError, KeyError):
        raise InvalidParameterException(BAD_TOKEN) from None
    if made_for != digest(query) or not isinstance(key, list):
        raise InvalidParameterException(BAD_TOKEN)
    return key


def event_token(way: str, key: Key) -> str:
    """``f/...`` (events after ``key``) or ``b/...`` (events before it)."""
    timestamp, event_id = key
    return f"{way}/{max(timestamp, 0):0{_TS_DIGITS}d}{event_id:0{_ID_DIGITS}d}/s"


def parse_event_token(token: str) -> tuple[str, Key]:
    match = _EVENT_TOKEN.fullmatch(token)
    if match is None:
        raise InvalidParameterException(BAD_TOKEN)
    return match["way"], (int(match["ts"]), int(match["id"]))
