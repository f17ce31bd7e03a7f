"""Listing keys as S3 does: by prefix, rolled up at a delimiter into common prefixes, a page at a time.

Pages are cut by position: a page ends at the first key (or common prefix) it cannot hold, and the
next page starts there. Continuation tokens carry that position, opaque to clients as S3's are.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import InvalidArgument
from .index import ObjectRow

Scan = Callable[[bytes, bytes | None, int], list[ObjectRow]]
_BATCH = 1000


@dataclass
class Listing:
    objects: list[ObjectRow] = field(default_factory=list)
    prefixes: list[bytes] = field(default_factory=list)
    truncated: bool = False
    next_start: bytes | None = None  # where the next page starts (inclusive) when truncated

    @property
    def last(self) -> bytes | None:
        """The last key or common prefix on this page (ListObjects v1's NextMarker)."""
        candidates = [
            b for b in (self.objects[-1].key if self.objects else None, max(self.prefixes, default=None)) if b
        ]
        return max(candidates) if candidates else None


def list_keys(scan: Scan, prefix: bytes, delimiter: bytes, start: bytes, max_keys: int) -> Listing:
    """``max_keys`` entries from ``start`` on (inclusive), among keys beginning with ``prefix``."""
    listing = Listing()
    stop = successor(prefix)
    position = max(start, prefix)
    while True:
        rows = scan(position, stop, _BATCH)
        jumped = False
        for row in rows:
            entry: bytes | None = None
            if delimiter:
                cut = row.key.find(delimiter, len(prefix))
                if cut >= 0:
                    entry = row.key[: cut + len(delimiter)]
            if len(listing.objects) + len(listing.prefixes) >= max_keys:
                listing.truncated, listing.next_start = True, entry or row.key
                return listing
            if entry is not None:
                listing.prefixes.append(entry)
                after = successor(entry)
                if after is None:  # nothing sorts after this prefix
                    return listing
                position, jumped = after, True
                break
            listing.objects.append(row)
            position = row.key + b"\x00"
        if not jumped and len(rows) < _BATCH:
            return listing


def start_after(marker: bytes, prefix: bytes, delimiter: bytes) -> bytes:
    """The inclusive start for keys after ``marker`` (a key, or a common prefix S3 returned)."""
    if delimiter and marker.startswith(prefix) and marker.endswith(delimiter) and len(marker) > len(prefix):
        # A common prefix: everything under it was rolled up into it already.
        return successor(marker) or marker + b"\x00"
    return marker + b"\x00"


def successor(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key beginning with ``prefix`` (None: no such key)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def encode_token(position: bytes) -> str:
    return base64.urlsafe_b64encode(b"v1:" + position).decode()


def decode_token(token: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(token.encode())
    except (binascii.Error, ValueError):
        raw = b""
    if not raw.startswith(b"v1:"):
        raise InvalidArgument(
            "The continuation token provided is incorrect", ArgumentName="continuation-token"
        )
    return raw[3:]
