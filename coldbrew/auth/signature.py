"""Recomputing a request's signature the way botocore computed it, and comparing in constant time.

The canonical request and string to sign come from botocore's own signers (``SigV4Auth`` for
SageMaker, CloudWatch and Logs, ``S3SigV4Auth`` for S3, ``HmacV1Auth`` for S3's SigV2), fed with
exactly what the client sent: the headers it listed in SignedHeaders, its raw path, its query and
its payload hash. Only the last HMAC is ours: signing keys (four HMACs each) are cached per key,
day, region and service, so a request costs one HMAC over a short string plus the body's hash.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Sequence
from urllib.parse import urlsplit

from botocore.auth import EMPTY_SHA256_HASH, HmacV1Auth, SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from coldbrew.auth.keys import AccessKey
from coldbrew.wire.sigv4 import SigV2Claim, SigV4Claim

__all__ = ["EMPTY_SHA256_HASH", "SigningKeys", "StringToSign", "sigv2_expected", "sigv4_string_to_sign"]


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


class SigningKeys:
    """Derived SigV4 signing keys, by (key id, created, day, region, service); bounded, LRU."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._keys: OrderedDict[tuple[str, str, str, str, str], bytes] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()
        self._generation = -1

    def get(self, key: AccessKey, date: str, region: str, service: str, generation: int = 0) -> bytes:
        """``generation`` is the key ring's: a reload (a key deleted and made again) drops them all."""
        cache_key = (key.access_key_id, key.created, date, region, service)
        with self._lock:
            if generation != self._generation:
                self._keys.clear()
                self._generation = generation
            found = self._keys.get(cache_key)
            if found is not None:
                self._keys.move_to_end(cache_key)
                return found
        derived = _hmac(
            _hmac(_hmac(_hmac(f"AWS4{key.secret_access_key}".encode(), date), region), service),
            "aws4_request",
        )
        with self._lock:
            self._keys[cache_key] = derived
            if len(self._keys) > self._max:
                self._keys.popitem(last=False)
        return derived


class _Canonical(SigV4Auth):
    """botocore's SigV4 canonicalisation over the client's own signed headers and payload hash."""

    def __init__(self, claim: SigV4Claim, signed: HTTPHeaders, payload_hash: str) -> None:
        super().__init__(None, claim.service, claim.region)
        self._signed = signed
        self._payload_hash = payload_hash

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        return self._signed  # what the client listed, not botocore's choice of headers

    def payload(self, request: AWSRequest) -> str:
        return self._payload_hash


class _S3Canonical(_Canonical):
    def _normalize_url_path(self, path: str) -> str:
        return path  # as S3SigV4Auth: S3 signs the path as sent, not normalised


class StringToSign:
    """The canonical request and string to sign of one request (shown to S3 clients on a mismatch,
    as S3 shows them: they hold nothing the client did not send)."""

    __slots__ = ("canonical_request", "text")

    def __init__(self, canonical_request: str, text: str) -> None:
        self.canonical_request, self.text = canonical_request, text


def sigv4_string_to_sign(
    claim: SigV4Claim,
    method: str,
    raw_path: str,
    query: Sequence[tuple[str, str]],
    headers: Sequence[tuple[str, str]],
    payload_hash: str,
) -> StringToSign:
    """``query`` is percent-decoded (a presigned URL's X-Amz-Signature left out); ``headers`` are
    all the request's (lower-case names); only those in the claim's SignedHeaders count."""
    wanted = set(claim.signed_headers)
    signed = HTTPHeaders()
    for name, value in headers:
        if name in wanted:
            signed[name] = value
    request = AWSRequest(method=method, url=f"http://signed{raw_path}", headers=signed, params=list(query))
    request.context["timestamp"] = claim.timestamp
    signer = (_S3Canonical if claim.service == "s3" else _Canonical)(claim, signed, payload_hash)
    canonical = signer.canonical_request(request)
    # The scope as the client wrote it (botocore builds it from the timestamp's day, which a
    # well-formed request has in common with it).
    text = "\n".join(
        (
            "AWS4-HMAC-SHA256",
            claim.timestamp,
            claim.scope,
            hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        )
    )
    return StringToSign(canonical, text)


def sign(signing_key: bytes, string_to_sign: str) -> str:
    return hmac.new(signing_key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def same(expected: str, provided: str) -> bool:
    return hmac.compare_digest(expected.encode("latin-1", "replace"), provided.encode("latin-1", "replace"))


class _V2(HmacV1Auth):
    """botocore's SigV2 (HmacV1) string to sign with the request's own date, not the clock's."""

    def __init__(self, key: AccessKey, date: str) -> None:
        super().__init__(Credentials(key.access_key_id, key.secret_access_key))
        self._date = date

    def _get_date(self) -> str:
        return self._date


def sigv2_expected(
    key: AccessKey,
    claim: SigV2Claim,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    auth_path: str | None,
) -> tuple[str, str]:
    """(expected base64 signature, string to sign). ``auth_path`` is ``/bucket/key`` for a
    virtual-hosted request (SigV2 signs the bucket in the path whatever the addressing)."""
    v2_headers = HTTPHeaders()
    for name, value in headers:
        if name not in ("authorization", "date"):
            v2_headers[name] = value
    date = str(claim.expires) if claim.presigned else (dict(headers).get("date") or "")
    signer = _V2(key, date)
    split = urlsplit(f"http://signed{raw_path}" + (f"?{raw_query}" if raw_query else ""))
    text = signer.canonical_string(method, split, v2_headers, auth_path=auth_path)
    return signer.sign_string(text), text
