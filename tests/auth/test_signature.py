"""Signatures recomputed server-side: botocore's signed requests verify, AWS's published
streaming-upload example verifies chunk by chunk, and any change to a signed part does not."""

from __future__ import annotations

import hashlib

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from coldbrew.auth.chunked import ChunkSignatures, HashCheck
from coldbrew.auth.errors import ChunkSignatureMismatch, IncompleteSignature, PayloadHashMismatch
from coldbrew.auth.keys import AccessKey
from coldbrew.auth.policy import admin_policy
from coldbrew.auth.signature import SigningKeys, same, sign, sigv4_string_to_sign
from coldbrew.wire.sigv4 import decode_query, parse_authorization

KEY = AccessKey("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", admin_policy(), "t0")


def _verify(request: AWSRequest, body: bytes) -> bool:
    """Our verification of a request botocore signed (headers as they go on the wire)."""
    # As the HTTP client sends it: with the Host header botocore signed but leaves to the client.
    headers = [("host", "127.0.0.1:8080"), *((k.lower(), v) for k, v in request.headers.items())]
    claim = parse_authorization(request.headers["Authorization"], dict(headers))
    path, _, query = request.url.split("://", 1)[1].partition("/")[2].partition("?")
    to_sign = sigv4_string_to_sign(
        claim, request.method, "/" + path, decode_query(query), headers, hashlib.sha256(body).hexdigest()
    )
    signing_key = SigningKeys().get(KEY, claim.date, claim.region, claim.service)
    return same(sign(signing_key, to_sign.text), claim.signature)


@pytest.mark.parametrize(
    ("service", "url", "body"),
    [
        ("sagemaker", "http://127.0.0.1:8080/", b'{"EndpointName": "e"}'),
        ("sagemaker", "http://127.0.0.1:8080/endpoints/my%20ep/invocations", b"1,2,3"),
        ("logs", "http://127.0.0.1:8080/?b=2&a=1&a=0&empty=", b"{}"),
        ("s3", "http://127.0.0.1:8080/bucket/a%20key%2Bplus/%E2%82%AC?list-type=2&prefix=a%2Fb", b""),
    ],
)
def test_botocores_signatures_verify_and_tampering_does_not(service: str, url: str, body: bytes) -> None:
    signer = (S3SigV4Auth if service == "s3" else SigV4Auth)(
        Credentials(KEY.access_key_id, KEY.secret_access_key), service, "us-east-1"
    )
    request = AWSRequest(method="POST", url=url, data=body, headers={"X-Amz-Target": "SageMaker.Op"})
    signer.add_auth(request)
    assert _verify(request, body)
    if service != "s3":  # S3 signs x-amz-content-sha256, checked as the body streams
        assert not _verify(request, body + b" ")
    request.headers.replace_header("X-Amz-Target", "SageMaker.Other")
    assert not _verify(request, body)


def test_signing_keys_are_cached_per_day_region_and_service() -> None:
    keys = SigningKeys(max_entries=2)
    first = keys.get(KEY, "20130524", "us-east-1", "s3")
    assert keys.get(KEY, "20130524", "us-east-1", "s3") is first
    assert keys.get(KEY, "20130525", "us-east-1", "s3") != first
    # AWS's published signing key example (secret above, 20120215/us-east-1/iam).
    assert keys.get(KEY, "20120215", "us-east-1", "iam").hex() != first.hex()
    keys.get(KEY, "20130524", "eu-west-1", "s3")  # evicts the oldest
    assert len(keys._keys) == 2
    assert keys.get(KEY, "20130524", "us-east-1", "s3", generation=1) == first  # recomputed, same value


# AWS's "Transferring payload in multiple chunks" example: 66,560 bytes of "a" in a 65,536-byte
# chunk, a 1,024-byte chunk and the final empty one, with the signatures AWS documents.
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
CHUNKS = [
    (65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
    (1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
    (0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
]


def _example_body(corrupt: bool = False) -> bytes:
    body = b""
    for size, signature in CHUNKS:
        data = bytearray(b"a" * size)
        if corrupt and size == 1024:
            data[10:11] = b"b"
        body += f"{size:x};chunk-signature={signature}\r\n".encode() + bytes(data) + b"\r\n"
    return body


def test_the_seed_signature_of_awss_example_verifies() -> None:
    headers = [
        ("host", "s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("content-length", "66824"),
    ]
    authorization = (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        f"x-amz-decoded-content-length;x-amz-storage-class,Signature={SEED}"
    )
    claim = parse_authorization(authorization, dict(headers))
    to_sign = sigv4_string_to_sign(
        claim, "PUT", "/examplebucket/chunkObject.txt", [], headers, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    )
    assert sign(SigningKeys().get(KEY, "20130524", "us-east-1", "s3"), to_sign.text) == SEED
    assert len(_example_body()) == 66824


def _chunk_check() -> ChunkSignatures:
    signing_key = SigningKeys().get(KEY, "20130524", "us-east-1", "s3")
    return ChunkSignatures(signing_key, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request", SEED, False)


@pytest.mark.parametrize("piece", [1, 7, 4096, 70000])
def test_awss_example_chunks_verify_however_the_body_arrives(piece: int) -> None:
    body, check = _example_body(), _chunk_check()
    for start in range(0, len(body), piece):
        check.feed(body[start : start + piece])
    check.finish()


def test_a_changed_chunk_is_refused() -> None:
    check = _chunk_check()
    with pytest.raises(ChunkSignatureMismatch):
        check.feed(_example_body(corrupt=True))


def test_an_unsigned_chunk_or_a_cut_body_is_refused() -> None:
    with pytest.raises(IncompleteSignature):
        _chunk_check().feed(b"400\r\n" + b"a" * 1024 + b"\r\n")
    check = _chunk_check()
    check.feed(_example_body()[:60000])
    with pytest.raises(IncompleteSignature):
        check.finish()


def test_the_payload_hash_is_checked() -> None:
    good = HashCheck(hashlib.sha256(b"hello").hexdigest())
    good.feed(b"hel")
    good.feed(b"lo")
    good.finish()
    bad = HashCheck(hashlib.sha256(b"hello").hexdigest())
    bad.feed(b"hellO")
    with pytest.raises(PayloadHashMismatch):
        bad.finish()
