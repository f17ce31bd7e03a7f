"""The embedded S3's XML request bodies (DeleteObjects, CompleteMultipartUpload): hostile
documents are S3's 400s, never a 5xx (bodies capped before parsing; expat refuses entity attacks)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support import ColdbrewServer

# Routed to S3 by the signing name in the credential scope (the signature is not checked on loopback).
SIGNED = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=AK/20261202/us-east-1/s3/aws4_request, "
    "SignedHeaders=host, Signature=00",
    "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
}
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(
        f'<!ENTITY {n} "{("&" + p + ";") * 10}">'.encode()
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + b"]><ROOT><Object><Key>&i;</Key></Object><Part><PartNumber>1</PartNumber><ETag>&i;</ETag></Part></ROOT>"
)
BODIES = {
    "deep": b"<ROOT>" + b"<a>" * 200_000 + b"</a>" * 200_000 + b"</ROOT>",
    "laughs": LAUGHS,
    "external-entity": b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<ROOT><Object><Key>&x;</Key></Object></ROOT>",
    "garbage": b"\xff\xfe<<<",
    "huge": b"<ROOT><Object><Key>" + b"k" * 3_000_000 + b"</Key></Object></ROOT>",
}


@pytest.fixture(scope="module")
def upload(server: ColdbrewServer) -> str:
    assert httpx.put(f"{server.url}/hardening-xml", headers=SIGNED).status_code == 200
    response = httpx.post(f"{server.url}/hardening-xml/k?uploads", headers=SIGNED)
    found = re.search(r"<UploadId>(.*?)</UploadId>", response.text)
    assert found, response.text
    return found.group(1)


@pytest.mark.parametrize("name", sorted(BODIES))
def test_hostile_xml_bodies_are_s3_400s(server: ColdbrewServer, upload: str, name: str) -> None:
    for path, root in [("/hardening-xml?delete", b"Delete"), (f"/hardening-xml/k?uploadId={upload}", b"x")]:
        body = BODIES[name].replace(b"ROOT", root if root != b"x" else b"CompleteMultipartUpload")
        response = httpx.post(server.url + path, content=body, headers=SIGNED, timeout=60)
        assert response.status_code < 500, response.text[:300]
        assert len(response.content) < 64 * 1024
