"""Object metadata on the wire: what a request sets (Content-Type, x-amz-meta-*, checksums), what
a response says (ETag, Last-Modified, ...), ranges and conditional requests."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping

from .checksums import algorithm_of_header, check_algorithm
from .errors import InvalidArgument, InvalidRange, NotModified, PreconditionFailed
from .http import Headers, http_date
from .index import DEFAULT_CONTENT_TYPE, STANDARD_HEADERS, ObjectMeta, ObjectRow

META_PREFIX = "x-amz-meta-"
MAX_USER_METADATA = 2048  # S3's limit on the size of the x-amz-meta-* headers together
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# ?response-content-type=... on a GET (presigned URLs use them) overrides what the object says.
OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}


def meta_from_headers(headers: Mapping[str, str]) -> ObjectMeta:
    user = {
        name[len(META_PREFIX) :]: value for name, value in headers.items() if name.startswith(META_PREFIX)
    }
    if sum(len(k) + len(v) for k, v in user.items()) > MAX_USER_METADATA:
        raise InvalidArgument(
            "Your metadata headers exceed the maximum allowed metadata size", ArgumentName="x-amz-meta-"
        )
    standard = {name: headers[name] for name in STANDARD_HEADERS if name in headers}
    # aws-chunked describes the upload's framing, not the object; S3 does not store it.
    encodings = [
        e for e in standard.pop("content-encoding", "").split(",") if e.strip() and e.strip() != "aws-chunked"
    ]
    if encodings:
        standard["content-encoding"] = ",".join(encodings)
    algorithm = headers.get("x-amz-checksum-algorithm")
    return ObjectMeta(
        content_type=headers.get("content-type") or DEFAULT_CONTENT_TYPE,
        headers=standard,
        user=user,
        checksum_algorithm=check_algorithm(algorithm) if algorithm else None,
        checksum_type=headers.get("x-amz-checksum-type", "COMPOSITE" if algorithm else None),
    )


def requested_checksum(
    headers: Mapping[str, str], default: str | None = None
) -> tuple[str | None, str | None, str | None]:
    """(algorithm, value, trailer): the checksum the client sends in a header, or names in
    x-amz-trailer to send after the body, or only names (S3 then computes it)."""
    for name, value in headers.items():
        algorithm = algorithm_of_header(name)
        if algorithm is not None:
            return algorithm, value, None
    trailer = headers.get("x-amz-trailer", "").strip().lower()
    algorithm = algorithm_of_header(trailer)
    if algorithm is not None:
        return algorithm, None, trailer
    named = headers.get("x-amz-sdk-checksum-algorithm")
    if named:
        return check_algorithm(named), None, None
    return default, None, None


def object_headers(row: ObjectRow, with_checksum: bool) -> Headers:
    meta = row.meta
    headers: Headers = [
        (b"etag", f'"{row.etag}"'.encode()),
        (b"last-modified", http_date(row.modified).encode()),
        (b"content-type", meta.content_type.encode("latin-1", "replace")),
        (b"accept-ranges", b"bytes"),
    ]
    headers += [(name.encode(), value.encode("latin-1", "replace")) for name, value in meta.headers.items()]
    headers += [
        ((META_PREFIX + k).encode("latin-1", "replace"), v.encode("latin-1", "replace"))
        for k, v in meta.user.items()
    ]
    if meta.parts:
        headers.append((b"x-amz-mp-parts-count", str(meta.parts).encode()))
    if with_checksum and meta.checksum is not None:
        headers.append((meta.checksum.header.encode(), meta.checksum.value.encode()))
        headers.append((b"x-amz-checksum-type", meta.checksum.type.encode()))
    return headers


def apply_overrides(headers: Headers, query: Mapping[str, str]) -> Headers:
    replaced = {OVERRIDES[name]: value for name, value in query.items() if name in OVERRIDES}
    if not replaced:
        return headers
    kept = [(k, v) for k, v in headers if k.decode() not in replaced]
    return kept + [(k.encode(), v.encode("latin-1", "replace")) for k, v in replaced.items()]


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a Range header, None for the whole object. As S3 does, a header
    it cannot parse (or several ranges) means the whole object; a start past the end is InvalidRange."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if not match or (not match[1] and not match[2]):
        return None
    first, last = match[1], match[2]
    if not first:  # the last N bytes
        length = int(last)
        if length == 0:
            raise InvalidRange(RangeRequested=header, ActualObjectSize=str(size))
        return (max(size - length, 0), size - 1) if size else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None  # syntactically invalid: ignored
    if start >= size:
        raise InvalidRange(RangeRequested=header, ActualObjectSize=str(size))
    return start, end


def check_conditions(headers: Mapping[str, str], row: ObjectRow) -> None:
    """If-Match / If-None-Match / If-(Un)Modified-Since, in the precedence RFC 9110 gives them."""
    etag = f'"{row.etag}"'
    if_match, if_none_match = headers.get("if-match"), headers.get("if-none-match")
    if if_match is not None and not _etag_matches(if_match, etag):
        raise PreconditionFailed(Condition="If-Match")
    unmodified = _date(headers.get("if-unmodified-since"))
    if if_match is None and unmodified is not None and int(row.modified) > unmodified:
        raise PreconditionFailed(Condition="If-Unmodified-Since")
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        raise NotModified()
    modified = _date(headers.get("if-modified-since"))
    if if_none_match is None and modified is not None and int(row.modified) <= modified:
        raise NotModified()


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip() for c in header.split(",")]
    return "*" in candidates or any(c.removeprefix("W/").strip('"') == etag.strip('"') for c in candidates)


def _date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None  # an unparseable date is ignored, as HTTP says
