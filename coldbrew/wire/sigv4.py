"""What a request says about its signature: SigV4 (Authorization header or presigned query) and
S3's older SigV2, parsed, not checked (:mod:`coldbrew.auth.signature` checks them).

Also the region the client signed for, which ARNs use whether or not auth is on.
"""

from __future__ import annotations

import calendar
import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

_SCOPE = re.compile(
    r"Credential=[^/,\s]+/\d{8}/(?P<region>[a-z0-9\-]+)/(?P<service>[a-z0-9\-.]+)/aws4_request"
)
ALGORITHM = "AWS4-HMAC-SHA256"
_TIMESTAMP = re.compile(r"^\d{8}T\d{6}Z$")


def signed_region(authorization: str | None) -> str | None:
    if not authorization:
        return None
    match = _SCOPE.search(authorization)
    return match["region"] if match else None


class SignatureFormatError(ValueError):
    """A signature that cannot be read (the message says which part is wrong)."""


@dataclass(frozen=True)
class SigV4Claim:
    """What the client claims: who signed, for which scope and when, over which headers."""

    access_key_id: str
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    timestamp: str  # the request's time, 20261202T101530Z
    signed_headers: tuple[str, ...]
    signature: str
    presigned: bool
    expires_s: int | None = None  # a presigned URL's X-Amz-Expires

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"

    @property
    def epoch(self) -> float:
        return float(calendar.timegm(time.strptime(self.timestamp, "%Y%m%dT%H%M%SZ")))


@dataclass(frozen=True)
class SigV2Claim:
    access_key_id: str
    signature: str  # base64
    presigned: bool
    expires: int | None = None  # a presigned URL's Expires (seconds since the epoch)
    date: str = ""  # the header form's Date (or x-amz-date) header, as sent


def _credential(value: str) -> tuple[str, str, str, str]:
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not re.fullmatch(r"\d{8}", parts[1]):
        raise SignatureFormatError(
            f"Credential should be scoped correctly: '{value[:200]}' is not "
            "<access key>/<YYYYMMDD>/<region>/<service>/aws4_request."
        )
    if not parts[0] or not parts[2] or not parts[3]:
        raise SignatureFormatError("Credential has an empty access key, region or service.")
    return parts[0], parts[1], parts[2], parts[3]


def _request_timestamp(headers: Mapping[str, str]) -> str:
    amz_date = headers.get("x-amz-date")
    if amz_date is not None:
        if not _TIMESTAMP.match(amz_date.strip()):
            raise SignatureFormatError(f"X-Amz-Date '{amz_date[:40]}' is not in the form 20261202T101530Z.")
        return amz_date.strip()
    date = headers.get("date")
    if date is not None:
        parsed = email.utils.parsedate_tz(date)
        if parsed is None:
            raise SignatureFormatError(f"Date '{date[:40]}' is not an HTTP date.")
        return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(email.utils.mktime_tz(parsed)))
    raise SignatureFormatError("The request is signed but has neither an X-Amz-Date nor a Date header.")


def parse_authorization(value: str, headers: Mapping[str, str]) -> SigV4Claim:
    """``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`` with the request's
    date header (lower-case ``headers``)."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureFormatError(f"Unsupported signature algorithm '{algorithm[:40]}'; use {ALGORITHM}.")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, text = part.strip().partition("=")
        if sep:
            fields[name] = text.strip()
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if n not in fields]
    if missing:
        raise SignatureFormatError(f"Authorization header requires '{missing[0]}' parameter.")
    key, date, region, service = _credential(fields["Credential"])
    signed = tuple(fields["SignedHeaders"].lower().split(";"))
    if "host" not in signed:
        raise SignatureFormatError("SignedHeaders must include 'host'.")
    return SigV4Claim(
        key, date, region, service, _request_timestamp(headers), signed, fields["Signature"], presigned=False
    )


def parse_presigned(query: Mapping[str, str]) -> SigV4Claim:
    """The ``X-Amz-*`` parameters of a presigned URL (``query`` already percent-decoded)."""
    missing = [
        n
        for n in (
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature",
        )
        if n not in query
    ]
    if missing:
        raise SignatureFormatError(f"Query-string authentication requires the {missing[0]} parameter.")
    if query["X-Amz-Algorithm"] != ALGORITHM:
        raise SignatureFormatError(f"X-Amz-Algorithm only supports '{ALGORITHM}'.")
    key, date, region, service = _credential(query["X-Amz-Credential"])
    timestamp = query["X-Amz-Date"]
    if not _TIMESTAMP.match(timestamp):
        raise SignatureFormatError(f"X-Amz-Date '{timestamp[:40]}' is not in the form 20261202T101530Z.")
    expires: int | None = None
    if "X-Amz-Expires" in query:
        text = query["X-Amz-Expires"]
        if not text.isdigit() or not 0 < int(text) <= 604800:
            raise SignatureFormatError("X-Amz-Expires must be a number of seconds from 1 to 604800 (7 days).")
        expires = int(text)
    signed = tuple(query["X-Amz-SignedHeaders"].lower().split(";"))
    return SigV4Claim(key, date, region, service, timestamp, signed, query["X-Amz-Signature"], True, expires)


def parse_sigv2_header(value: str, headers: Mapping[str, str]) -> SigV2Claim:
    """``AWS AKID:base64signature`` (S3's signature version 2)."""
    _, _, rest = value.strip().partition(" ")
    key, sep, signature = rest.rpartition(":")
    if not sep or not key or not signature:
        raise SignatureFormatError("A signature version 2 Authorization header is 'AWS <key>:<signature>'.")
    date = headers.get("x-amz-date") or headers.get("date")
    if date is None:
        raise SignatureFormatError("The request is signed but has neither an X-Amz-Date nor a Date header.")
    return SigV2Claim(key, signature, presigned=False, date=date)


def parse_sigv2_query(query: Mapping[str, str]) -> SigV2Claim:
    expires = query.get("Expires", "")
    if not expires.isdigit():
        raise SignatureFormatError("A signature version 2 presigned URL needs Expires (seconds since 1970).")
    return SigV2Claim(query["AWSAccessKeyId"], query["Signature"], presigned=True, expires=int(expires))


def http_date_epoch(value: str) -> float | None:
    parsed = email.utils.parsedate_tz(value)
    return None if parsed is None else float(email.utils.mktime_tz(parsed))


def decode_query(raw: str) -> list[tuple[str, str]]:
    """Query parameters percent-decoded, in order, blank values kept (``+`` stays a plus, as
    SigV4's canonical form reads it)."""
    pairs = []
    for part in raw.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs
