"""Requests signed by botocore's signers at a time the test chooses (for skew and expiry), and
S3's signed aws-chunked uploads, which botocore does not send (the Java and Go SDKs do)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from botocore.auth import HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def credentials(key: dict[str, str]) -> Credentials:
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def sign_at(
    request: AWSRequest, key: dict[str, str], service: str, timestamp: str, region: str = "us-east-1"
) -> None:
    """What ``add_auth`` does, with ``timestamp`` (20261202T101530Z) instead of the clock."""
    signer = (S3SigV4Auth if service == "s3" else SigV4Auth)(credentials(key), service, region)
    request.context["timestamp"] = timestamp
    signer._modify_request_before_signing(request)
    canonical = signer.canonical_request(request)
    signer._inject_signature_to_request(
        request, signer.signature(signer.string_to_sign(request, canonical), request)
    )


def presign_at(url: str, key: dict[str, str], timestamp: str, expires: int) -> str:
    signer = S3SigV4QueryAuth(credentials(key), "s3", "us-east-1", expires=expires)
    request = AWSRequest(method="GET", url=url)
    request.context["timestamp"] = timestamp
    signer._modify_request_before_signing(request)
    canonical = signer.canonical_request(request)
    signer._inject_signature_to_request(
        request, signer.signature(signer.string_to_sign(request, canonical), request)
    )
    return str(request.url)


def presign_v2(url: str, key: dict[str, str], expires: int) -> str:
    request = AWSRequest(method="GET", url=url)
    HmacV1QueryAuth(credentials(key), expires=expires).add_auth(request)
    return str(request.url)


class _StreamingSeed(S3SigV4Auth):
    def payload(self, request: Any) -> str:
        return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


def signed_chunked_put(
    url: str, key: dict[str, str], data: bytes, chunk: int = 65536, corrupt: bool = False
) -> tuple[dict[str, str], bytes]:
    """Headers and body of a ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` PUT of ``data``, as AWS
    documents it (the seed signature from botocore's signer, each chunk's chained on it)."""
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] + [b""]
    framed_length = sum(len(f"{len(p):x};chunk-signature=") + 64 + 2 + len(p) + 2 for p in pieces)
    request = AWSRequest(
        method="PUT",
        url=url,
        headers={
            "Content-Encoding": "aws-chunked",
            "X-Amz-Decoded-Content-Length": str(len(data)),
            "Content-Length": str(framed_length),
        },
    )
    signer = _StreamingSeed(credentials(key), "s3", "us-east-1")
    signer.add_auth(request)
    timestamp = request.context["timestamp"]
    scope = f"{timestamp[:8]}/us-east-1/s3/aws4_request"
    signing_key = b"AWS4" + key["SecretAccessKey"].encode()
    for part in (timestamp[:8], "us-east-1", "s3", "aws4_request"):
        signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
    previous = request.headers["Authorization"].rsplit("Signature=", 1)[1]
    body = b""
    empty = hashlib.sha256(b"").hexdigest()
    for number, piece in enumerate(pieces):
        text = f"AWS4-HMAC-SHA256-PAYLOAD\n{timestamp}\n{scope}\n{previous}\n{empty}\n"
        text += hashlib.sha256(piece).hexdigest()
        previous = hmac.new(signing_key, text.encode(), hashlib.sha256).hexdigest()
        sent = piece
        if corrupt and number == 1:
            sent = b"X" + piece[1:]
        body += f"{len(piece):x};chunk-signature={previous}\r\n".encode() + sent + b"\r\n"
    assert len(body) == framed_length
    headers = {k: v for k, v in request.headers.items()}
    return headers, body
