"""S3's content checksums: the MD5 behind every ETag and the flexible checksums botocore sends.

Recent botocore sends ``x-amz-checksum-crc32`` (or the algorithm the caller picks) with each
upload, as a header or as an aws-chunked trailer. The store checks the ones it can compute (the
``hashlib`` and ``zlib`` ones always; CRC32C and CRC64NVME when ``awscrt`` is installed, which is
also when botocore sends them) and keeps the value, so GetObject can return it for botocore to check
what it downloaded. A value it cannot compute is kept as the client sent it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import BadDigest, InvalidDigest, InvalidRequest

HEADER_PREFIX = "x-amz-checksum-"
# S3's algorithm names, as in x-amz-checksum-algorithm and the XML Checksum<Name> elements.
ALGORITHMS = (
    "CRC32",
    "CRC32C",
    "CRC64NVME",
    "SHA1",
    "SHA256",
    "SHA512",
    "MD5",
    "XXHASH64",
    "XXHASH3",
    "XXHASH128",
)


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes, /) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


class _Crt:
    """A CRC from awscrt, whose functions take the running value."""

    def __init__(self, function: Callable[[bytes, int], int], size: int) -> None:
        self.function, self.size, self.value = function, size, 0

    def update(self, data: bytes, /) -> None:
        self.value = self.function(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(self.size, "big")


def _crt_factories() -> dict[str, Callable[[], _Hash]]:
    try:
        from awscrt import checksums  # type: ignore[import-not-found]
    except ImportError:
        return {}
    found: dict[str, Callable[[], _Hash]] = {"CRC32C": lambda: _Crt(checksums.crc32c, 4)}
    if hasattr(checksums, "crc64nvme"):
        found["CRC64NVME"] = lambda: _Crt(checksums.crc64nvme, 8)
    return found


_FACTORIES: dict[str, Callable[[], _Hash]] = {
    "CRC32": _Crc32,
    "SHA1": lambda: hashlib.sha1(usedforsecurity=False),
    "SHA256": hashlib.sha256,
    "SHA512": hashlib.sha512,
    "MD5": lambda: hashlib.md5(usedforsecurity=False),
    **_crt_factories(),
}


@dataclass(frozen=True)
class Checksum:
    """A checksum of an object: ``value`` is base64, with ``-N`` for a composite of N parts."""

    algorithm: str
    value: str
    type: str = "FULL_OBJECT"  # or COMPOSITE, as S3's x-amz-checksum-type says

    @property
    def header(self) -> str:
        return HEADER_PREFIX + self.algorithm.lower()

    def to_json(self) -> list[str]:
        return [self.algorithm, self.value, self.type]

    @classmethod
    def from_json(cls, data: Any) -> Checksum | None:
        if isinstance(data, list) and len(data) == 3 and all(isinstance(v, str) for v in data):
            return cls(data[0], data[1], data[2])
        return None


def algorithm_of_header(name: str) -> str | None:
    """``CRC32`` for ``x-amz-checksum-crc32``; None for other headers (type, mode, algorithm)."""
    if not name.startswith(HEADER_PREFIX):
        return None
    algorithm = name[len(HEADER_PREFIX) :].upper()
    return algorithm if algorithm in ALGORITHMS else None


def check_algorithm(name: str) -> str:
    algorithm = name.upper()
    if algorithm not in ALGORITHMS:
        raise InvalidRequest(
            f"Checksum algorithm {name!r} is not supported.", ArgumentName="x-amz-checksum-algorithm"
        )
    return algorithm


class Digests:
    """The MD5 (for the ETag) and, when the client sent one, its checksum, over the same bytes.

    ``update`` is called from a worker thread with large blocks; hashlib and zlib release the GIL
    for them, so hashing does not stall the event loop."""

    def __init__(self, algorithm: str | None = None, content_md5: str | None = None) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.algorithm = algorithm
        self._checksum = _FACTORIES[algorithm]() if algorithm in _FACTORIES else None
        self._content_md5 = _decode(content_md5, 16, "Content-MD5") if content_md5 is not None else None
        self.size = 0

    def update(self, data: bytes) -> None:
        self.md5.update(data)
        if self._checksum is not None:
            self._checksum.update(data)
        self.size += len(data)

    def finish(self, expected: str | None) -> Checksum | None:
        """Check Content-MD5 and the client's checksum (``expected``, base64); return the checksum
        to keep. Raises BadDigest when the bytes received are not the bytes the client summed."""
        if self._content_md5 is not None and self._content_md5 != self.md5.digest():
            raise BadDigest("The Content-MD5 you specified did not match what we received.")
        if self.algorithm is None:
            return None
        if expected is None:
            if self._checksum is None:
                return None
            expected = base64.b64encode(self._checksum.digest()).decode()
        elif self._checksum is not None:
            if _decode(expected, None, self.algorithm) != self._checksum.digest():
                raise BadDigest(f"The {self.algorithm} you specified did not match the calculated checksum.")
        return Checksum(self.algorithm, expected)

    @property
    def etag(self) -> str:
        return self.md5.hexdigest()


def composite(algorithm: str, part_checksums: list[str]) -> Checksum | None:
    """S3's COMPOSITE checksum of a multipart object: the checksum of the parts' binary checksums,
    then ``-N``; None when it cannot be computed here."""
    factory = _FACTORIES.get(algorithm)
    if factory is None:
        return None
    whole = factory()
    for value in part_checksums:
        whole.update(_decode(value, None, algorithm))
    value = base64.b64encode(whole.digest()).decode()
    return Checksum(algorithm, f"{value}-{len(part_checksums)}", "COMPOSITE")


def full_object(algorithm: str) -> _Hash | None:
    factory = _FACTORIES.get(algorithm)
    return factory() if factory is not None else None


def multipart_etag(part_md5s: list[bytes]) -> str:
    """S3's ETag of a multipart object: the MD5 of the parts' binary MD5s, then ``-N``."""
    return f"{hashlib.md5(b''.join(part_md5s), usedforsecurity=False).hexdigest()}-{len(part_md5s)}"


def _decode(value: str, size: int | None, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidDigest(f"The {what} you specified is not valid base64.") from None
    if size is not None and len(raw) != size:
        raise InvalidDigest(f"The {what} you specified is not valid.")
    return raw
