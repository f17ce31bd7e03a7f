"""Checking a body while it streams: its SHA-256 against ``x-amz-content-sha256``, or each
chunk's signature in S3's signed ``aws-chunked`` uploads (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``
and its ``-TRAILER`` variant).

A signed chunk is ``<hex size>;chunk-signature=<sig>\\r\\n<data>\\r\\n``; each signature chains
on the one before (the first on the request's own, the "seed")::

    AWS4-HMAC-SHA256-PAYLOAD \\n <timestamp> \\n <scope> \\n <previous signature> \\n
    <sha256 of ""> \\n <sha256 of the chunk's data>

and with a trailer, after the last (empty) chunk, the trailer lines and
``x-amz-trailer-signature:<sig>`` over ``AWS4-HMAC-SHA256-TRAILER`` and the trailer lines' hash.
The framing itself is decoded (and refused when malformed) by the S3 store's decoder; this one
only reads as much of it as the signatures need, and says whether the body was the signed one.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from coldbrew.auth.errors import ChunkSignatureMismatch, IncompleteSignature, PayloadHashMismatch

EMPTY_HASH = hashlib.sha256(b"").hexdigest()
_MAX_LINE = 8192
_SIZE = re.compile(rb"^([0-9a-fA-F]{1,16})(?:;chunk-signature=([0-9a-f]{64}))?$")


class BodyCheck:
    """Fed the HTTP body as it arrives; ``feed`` and ``finish`` raise an AuthError on a body that
    is not the signed one."""

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError


class HashCheck(BodyCheck):
    """The whole body's SHA-256 must be the ``x-amz-content-sha256`` the client signed."""

    def __init__(self, expected: str) -> None:
        self.expected = expected.lower()
        self._hash = hashlib.sha256()

    def feed(self, data: bytes) -> None:
        self._hash.update(data)

    def finish(self) -> None:
        computed = self._hash.hexdigest()
        if not hmac.compare_digest(computed, self.expected):
            raise PayloadHashMismatch(
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ClientComputedContentSHA256=self.expected[:64],
                S3ComputedContentSHA256=computed,
            )


class ChunkSignatures(BodyCheck):
    def __init__(
        self, signing_key: bytes, timestamp: str, scope: str, seed_signature: str, trailer: bool
    ) -> None:
        self._key = signing_key
        self._prefix = f"{timestamp}\n{scope}\n"
        self._previous = seed_signature
        self._trailer = trailer
        self._state = "size"  # size -> data -> crlf -> size ... -> (trailers) -> done
        self._line = bytearray()
        self._remaining = 0
        self._claimed = ""
        self._hash = hashlib.sha256()
        self._trailer_lines: list[bytes] = []

    def _sign(self, kind: str, payload_hash: str, empty: bool = True) -> str:
        middle = f"{EMPTY_HASH}\n" if empty else ""
        text = f"AWS4-HMAC-SHA256-{kind}\n{self._prefix}{self._previous}\n{middle}{payload_hash}"
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def _check(self, expected: str, claimed: str) -> None:
        if not hmac.compare_digest(expected, claimed):
            raise ChunkSignatureMismatch(
                "The request signature we calculated does not match the signature you provided "
                "for a chunk of the aws-chunked body. Check your key and signing method."
            )
        self._previous = claimed

    def feed(self, data: bytes) -> None:
        view, pos, end = memoryview(data), 0, len(data)
        while pos < end:
            if self._state == "data":
                take = min(self._remaining, end - pos)
                self._hash.update(view[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._check(self._sign("PAYLOAD", self._hash.hexdigest()), self._claimed)
                    self._state = "crlf"
                continue
            if self._state == "done":
                return  # anything after the end is the store decoder's to refuse
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline + 1
            self._line += view[pos:stop]
            pos = stop
            if len(self._line) > _MAX_LINE:
                raise IncompleteSignature("An aws-chunked header line is too long.")
            if newline >= 0:
                line = bytes(self._line).rstrip(b"\r\n")
                self._line.clear()
                self._on_line(line)

    def _on_line(self, line: bytes) -> None:
        if self._state == "crlf":
            self._state = "size"
        elif self._state == "size":
            match = _SIZE.match(line)
            if match is None or match[2] is None:
                raise IncompleteSignature(
                    "A chunk of a STREAMING-AWS4-HMAC-SHA256-PAYLOAD body has no chunk-signature."
                )
            size, self._claimed = int(match[1], 16), match[2].decode()
            if size:
                self._remaining, self._hash, self._state = size, hashlib.sha256(), "data"
            else:
                self._check(self._sign("PAYLOAD", EMPTY_HASH), self._claimed)
                self._state = "trailers" if self._trailer else "crlf_end"
        elif self._state == "crlf_end":
            self._state = "done"
        elif self._state == "trailers":
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"x-amz-trailer-signature":
                canonical = b"".join(self._trailer_lines)
                expected = self._sign("TRAILER", hashlib.sha256(canonical).hexdigest(), empty=False)
                self._check(expected, value.strip().decode("latin-1"))
                self._state = "crlf_end"
            elif line:
                self._trailer_lines.append(name.strip().lower() + b":" + value.strip() + b"\n")

    def finish(self) -> None:
        if self._state not in ("done", "crlf_end"):
            raise IncompleteSignature("The aws-chunked body ended before its signed final chunk.")
