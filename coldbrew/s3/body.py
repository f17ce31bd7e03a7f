"""Request bodies read from ASGI as they arrive: aws-chunked decoded, sizes enforced, never whole.

Uploads are read in blocks of at most about ``BLOCK`` bytes, so a 5 GB PUT holds one block in memory; the
ASGI server stops reading the socket while the store writes one (its flow control), so a fast
client cannot queue more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from starlette.types import Receive

from .chunked import ChunkedDecoder
from .errors import EntityTooLarge, IncompleteBody, InvalidArgument, MaxMessageLengthExceeded

BLOCK = 1024 * 1024
# Small bodies go in smaller blocks, so that writing and hashing start while the rest arrives;
# large ones in large blocks, for fewer hand-offs to the writing thread.
SMALL_BLOCK, SMALL_BODY = 256 * 1024, 8 * 1024 * 1024


class ClientGone(Exception):
    """The client disconnected before sending the whole body: there is no one to answer."""


class RequestBody:
    def __init__(self, receive: Receive, headers: Mapping[str, str]) -> None:
        self._receive = receive
        encodings = [e.strip().lower() for e in headers.get("content-encoding", "").split(",") if e.strip()]
        sha256 = headers.get("x-amz-content-sha256", "")
        self.chunked = "aws-chunked" in encodings or sha256.startswith("STREAMING-")
        self._decoder = ChunkedDecoder() if self.chunked else None
        declared = (
            headers.get("x-amz-decoded-content-length") if self.chunked else headers.get("content-length")
        )
        self.declared_size = _length(declared) if declared is not None else None
        self.size = 0

    @property
    def trailers(self) -> dict[str, str]:
        return self._decoder.trailers if self._decoder is not None else {}

    async def blocks(self, limit: int) -> AsyncIterator[bytes]:
        """The payload in blocks of about ``BLOCK`` bytes (smaller for a small body); EntityTooLarge
        past ``limit`` bytes."""
        if self.declared_size is not None and self.declared_size > limit:
            raise EntityTooLarge(ProposedSize=str(self.declared_size), MaxSizeAllowed=str(limit))
        pending: list[bytes] = []
        pending_size = 0
        block = SMALL_BLOCK if self.declared_size is not None and self.declared_size <= SMALL_BODY else BLOCK
        more = True
        while more:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            data: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            pieces = self._decoder.feed(data) if self._decoder is not None else [data] if data else []
            for piece in pieces:
                self.size += len(piece)
                pending.append(piece)
                pending_size += len(piece)
            if self.size > limit:
                raise EntityTooLarge(MaxSizeAllowed=str(limit))
            if pending_size >= block or (not more and pending):
                yield pending[0] if len(pending) == 1 else b"".join(pending)
                pending, pending_size = [], 0
        if self._decoder is not None:
            self._decoder.finish()
        if self.declared_size is not None and self.size != self.declared_size:
            raise IncompleteBody(
                f"The body has {self.size} bytes, not the {self.declared_size} its length header declares."
            )

    async def read(self, limit: int) -> bytes:
        """The whole payload of a small request (an XML document); MaxMessageLengthExceeded past ``limit``."""
        parts: list[bytes] = []
        try:
            async for block in self.blocks(limit):
                parts.append(block)
        except EntityTooLarge:
            raise MaxMessageLengthExceeded() from None
        return b"".join(parts)


def _length(value: str) -> int:
    if not value.strip().isdigit():
        raise InvalidArgument(f"The length {value[:32]!r} is not a number.", ArgumentName="Content-Length")
    return int(value)
