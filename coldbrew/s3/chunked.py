"""The ``aws-chunked`` content encoding, decoded as it arrives.

SDKs send it for streaming uploads (``x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER``,
``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` and their ``-TRAILER`` variants): the payload is framed again
inside the HTTP body as ``<hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n`` ... ``0\\r\\n``, then
trailer lines (``x-amz-checksum-crc32:<base64>``) and an empty line. Chunk signatures are checked
in front of the store, when auth is on (:mod:`coldbrew.auth.chunked`); everything else about the
framing is checked here, so a malformed body is a 400, never bytes stored as data.
"""

from __future__ import annotations

import re

from .errors import IncompleteBody, InvalidRequest

_HEX = re.compile(rb"[0-9a-fA-F]{1,16}")
_MAX_LINE = 8192  # a size line with its signature is ~90 bytes; a trailer line is short too


class ChunkedDecoder:
    """Feed it the HTTP body piece by piece; it returns the payload's pieces and keeps the trailers."""

    def __init__(self) -> None:
        self.trailers: dict[str, str] = {}
        self._line = bytearray()
        self._remaining = 0  # payload bytes left in the current chunk
        self._state = "size"  # size -> data -> crlf -> size ... -> trailers -> done

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        view, pos, end = memoryview(data), 0, len(data)
        while pos < end:
            if self._state == "data":
                take = min(self._remaining, end - pos)
                out.append(bytes(view[pos : pos + take]))
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = "crlf"
                continue
            if self._state == "done":
                raise InvalidRequest("The aws-chunked body has data after its final chunk.")
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline + 1
            self._line += view[pos:stop]
            pos = stop
            if len(self._line) > _MAX_LINE:
                raise InvalidRequest("The aws-chunked body has a chunk header line that is too long.")
            if newline >= 0:
                line = bytes(self._line).rstrip(b"\r\n")
                self._line.clear()
                self._on_line(line)
        return out

    def finish(self) -> None:
        """The HTTP body has ended: it must have ended the aws-chunked stream too."""
        if self._state == "trailers" and not self._line:
            self._state = "done"  # some clients end after the last trailer line, without the blank line
        if self._state != "done":
            raise IncompleteBody("The aws-chunked body ended before its final chunk.")

    def _on_line(self, line: bytes) -> None:
        if self._state == "crlf":
            if line:
                raise InvalidRequest("An aws-chunked chunk is longer than its declared size.")
            self._state = "size"
        elif self._state == "size":
            size_text = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):  # int(..., 16) would also take "+1f" and "1_0"
                raise InvalidRequest(f"The aws-chunked chunk size {size_text[:32]!r} is not hexadecimal.")
            size = int(size_text, 16)
            self._remaining = size
            self._state = "data" if size else "trailers"
        elif self._state == "trailers":
            if not line:
                self._state = "done"
                return
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise InvalidRequest("An aws-chunked trailer line has no ':'.")
            self.trailers[name.strip().lower()] = value.strip()
