"""The wire, raw: aws-chunked bodies as SDKs frame them, checksums and digests that do not match,
hostile or broken XML, junk requests (S3's XML errors, never a 5xx, never a hang), bounded memory."""

from __future__ import annotations

import base64
import hashlib
import io
import socket
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

from tests.support import ColdbrewServer

# coldbrew does not verify signatures yet; the credential scope only routes the request to S3.
AUTH = {"Authorization": "AWS4-HMAC-SHA256 Credential=any/20260101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=00"}  # fmt: skip


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def code_of(response: httpx.Response) -> str:
    text = response.text
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else ""


@pytest.fixture
def url(server: ColdbrewServer, s3: Any, bucket: str) -> str:
    return f"{server.url}/{bucket}"


def test_aws_chunked_as_botocore_frames_it(url: str, s3: Any, bucket: str) -> None:
    # botocore frames uploads this way over HTTPS (over HTTP it sends the checksum as a header).
    data = bytes(range(256)) * 1000
    body = AwsChunkedWrapper(io.BytesIO(data), Crc32Checksum, "x-amz-checksum-crc32", chunk_size=7000).read()
    headers = {
        **AUTH, "Content-Encoding": "aws-chunked",
        "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "X-Amz-Trailer": "x-amz-checksum-crc32",
        "X-Amz-Decoded-Content-Length": str(len(data)),
    }  # fmt: skip
    response = httpx.put(f"{url}/chunked", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["x-amz-checksum-crc32"] == crc32(data)
    got = s3.get_object(Bucket=bucket, Key="chunked", ChecksumMode="ENABLED")
    assert got["Body"].read() == data and got["ChecksumCRC32"] == crc32(data)
    assert "ContentEncoding" not in got  # aws-chunked was the upload's framing, not the object's


def test_signed_aws_chunked_chunks(url: str, s3: Any, bucket: str) -> None:
    pieces = [b"a" * 65536, b"b" * 1000]
    signature = ";chunk-signature=" + "0" * 64
    body = b"".join(f"{len(p):x}{signature}\r\n".encode() + p + b"\r\n" for p in pieces)
    body += f"0{signature}\r\n\r\n".encode()
    headers = {
        **AUTH, "X-Amz-Content-SHA256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "X-Amz-Decoded-Content-Length": str(sum(map(len, pieces))), "Content-Encoding": "aws-chunked,gzip",
    }  # fmt: skip
    assert httpx.put(f"{url}/signed", content=body, headers=headers).status_code == 200
    got = s3.get_object(Bucket=bucket, Key="signed")
    assert got["Body"].read() == b"".join(pieces) and got["ContentEncoding"] == "gzip"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"zz\r\nabc\r\n0\r\n\r\n", "InvalidRequest"),  # not hexadecimal
        (b"+3\r\nabc\r\n0\r\n\r\n", "InvalidRequest"),
        (b"3\r\nabcdef\r\n0\r\n\r\n", "InvalidRequest"),  # longer than declared
        (b"3\r\nabc\r\n", "IncompleteBody"),  # no final chunk
        (b"3\r\nabc\r\n0\r\n\r\nextra", "InvalidRequest"),
        (b"f" * 10000, "InvalidRequest"),  # an endless size line
    ],
)
def test_malformed_aws_chunked_is_refused(url: str, s3: Any, bucket: str, body: bytes, code: str) -> None:
    headers = {
        **AUTH,
        "Content-Encoding": "aws-chunked",
        "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    }
    response = httpx.put(f"{url}/malformed", content=body, headers=headers)
    assert response.status_code == 400 and code_of(response) == code, response.text
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_checksums_and_digests_that_do_not_match(url: str, s3: Any, bucket: str) -> None:
    data = b"the bytes"
    wrong_trailer = AwsChunkedWrapper(io.BytesIO(data), Crc32Checksum, "x-amz-checksum-crc32").read()
    wrong_trailer = wrong_trailer.replace(crc32(data).encode(), crc32(b"other").encode())
    chunked = {**AUTH, "Content-Encoding": "aws-chunked", "X-Amz-Trailer": "x-amz-checksum-crc32",
               "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}  # fmt: skip
    cases = [
        (wrong_trailer, chunked, "BadDigest"),
        (data, {**AUTH, "x-amz-checksum-crc32": crc32(b"other")}, "BadDigest"),
        (data, {**AUTH, "x-amz-checksum-sha256": base64.b64encode(b"x" * 32).decode()}, "BadDigest"),
        (
            data,
            {**AUTH, "Content-MD5": base64.b64encode(hashlib.md5(b"other").digest()).decode()},
            "BadDigest",
        ),
        (data, {**AUTH, "Content-MD5": "not base64!"}, "InvalidDigest"),
        (data, {**AUTH, "x-amz-checksum-crc32": "***"}, "InvalidDigest"),
    ]
    for body, headers, code in cases:
        response = httpx.put(f"{url}/digest", content=body, headers=headers)
        assert response.status_code == 400 and code_of(response) == code, (headers, response.text)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    good = {**AUTH, "Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode(),
            "x-amz-checksum-sha256": base64.b64encode(hashlib.sha256(data).digest()).decode()}  # fmt: skip
    assert httpx.put(f"{url}/digest", content=data, headers=good).status_code == 200


BILLION_LAUGHS = b"""<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">
<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
<!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;"><!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
<!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;"><!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
<!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;"><!ENTITY i "&h;&h;&h;&h;&h;&h;&h;&h;&h;&h;">
]><Delete><Object><Key>&i;</Key></Object></Delete>"""


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("?delete", b"<Delete><Object><Key>a</Key>", "MalformedXML"),
        ("?delete", b"<NotDelete/>", "MalformedXML"),
        ("?delete", b"<Delete></Delete>", "MalformedXML"),
        ("?delete", BILLION_LAUGHS, "MalformedXML"),
        (
            "?delete",
            b"<Delete>" + b"<Object><Key>k</Key></Object>" * 100_000 + b"</Delete>",
            "MaxMessageLengthExceeded",
        ),
        (
            "/k?uploadId=nope",
            b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber></Part></CompleteMultipartUpload>",
            "MalformedXML",
        ),  # fmt: skip
        ("/k?uploadId=nope", b"<CompleteMultipartUpload/>", "MalformedXML"),
    ],
)
def test_broken_and_hostile_xml(url: str, path: str, body: bytes, code: str) -> None:
    started = time.monotonic()
    response = httpx.post(f"{url}{path}", content=body, headers=AUTH, timeout=10)
    assert response.status_code == 400 and code_of(response) == code, response.text
    assert time.monotonic() - started < 5


def test_junk_requests_get_s3_errors_never_a_5xx(server: ColdbrewServer, bucket: str) -> None:
    b = f"/{bucket}"
    chunked = {"x-amz-decoded-content-length": "abc", "content-encoding": "aws-chunked"}
    requests = [
        ("PATCH", "/", {}), ("POST", "/", {}), ("DELETE", "/", {}), ("PATCH", b, {}),
        ("POST", f"{b}?nothing", {}), ("GET", f"{b}?list-type=3", {}), ("GET", f"{b}?encoding-type=xml", {}),
        ("GET", f"{b}?max-keys=many", {}),
        ("GET", f"{b}?uploads&max-uploads=x", {}), ("PUT", f"{b}/k?partNumber=1&uploadId=", {}),
        ("PUT", f"{b}/k?partNumber=0&uploadId=x", {}), ("PUT", f"{b}/k", {"x-amz-copy-source": "no-slash"}),
        ("PUT", f"{b}/k", {"x-amz-copy-source": "/nobucket-here/x"}),
        ("PUT", f"{b}/k", {"x-amz-metadata-directive": "MAYBE", "x-amz-copy-source": "a/b"}),
        ("PUT", f"{b}/k", {"x-amz-checksum-algorithm": "ROT13"}), ("PUT", f"{b}/k", chunked),
        ("GET", f"{b}/%ff%fe", {}), ("GET", "/Bad_Bucket/k", {}), ("GET", f"{b}/k", {"range": "bytes=abc"}),
        ("PUT", b, {}),  # the bucket exists already
        ("PUT", "/" + "x" * 300, {}), ("GET", f"{b}/k?partNumber=2", {}),
        ("POST", f"{b}/k?uploads", {"x-amz-checksum-algorithm": "nope"}),
        ("GET", b, {"x-amz-expected-bucket-owner": "999999999999"}),
        ("GET", f"{b}?list-type=2&continuation-token=%%%", {}),
    ]  # fmt: skip
    for method, path, headers in requests:
        response = httpx.request(method, server.url + path, headers={**AUTH, **headers}, timeout=10)
        assert 400 <= response.status_code < 500, (method, path, response.status_code, response.text)
        assert code_of(response), (method, path, response.text)
    unsupported = httpx.get(f"{server.url}{b}?acl", headers=AUTH)
    # S3's code for a feature it does not have, with a 400: no request gets a 5xx from coldbrew.
    assert unsupported.status_code == 400 and code_of(unsupported) == "NotImplemented"
    assert "Traceback" not in server.log() and " ERROR " not in server.log()


def test_an_upload_past_5_gb_is_refused_before_its_body(server: ColdbrewServer, bucket: str) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = (f"PUT /{bucket}/huge HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {AUTH['Authorization']}\r\n"
                f"Content-Length: {6 * 1024**3}\r\nExpect: 100-continue\r\n\r\n")  # fmt: skip
        sock.sendall(head.encode())
        reply = b""
        while b"</Error>" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 400") and b"<Code>EntityTooLarge</Code>" in reply
    assert b"connection: close" in reply.lower()  # the body it did not read never comes


def test_a_client_that_goes_away_mid_upload_leaves_nothing(
    server: ColdbrewServer, url: str, s3: Any, bucket: str
) -> None:
    host, port = "127.0.0.1", server.port
    path = url[len(server.url) :] + "/abandoned"
    with socket.create_connection((host, port)) as sock:
        head = (f"PUT {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {AUTH['Authorization']}\r\n"
                "Content-Length: 10000000\r\n\r\n")  # fmt: skip
        sock.sendall(head.encode() + b"x" * 3_000_000)
        time.sleep(0.3)
    tmp = server.data_dir / "s3" / "tmp"
    deadline = time.monotonic() + 5
    while any(tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(tmp.iterdir())
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_a_large_put_and_get_stream_in_bounded_memory(server: ColdbrewServer, url: str) -> None:
    assert server.process is not None
    process = psutil.Process(server.process.pid)
    size, block = 100 * 1024 * 1024, b"z" * (1024 * 1024)

    def body() -> Iterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    before = process.memory_info().rss
    # Chunked transfer encoding, no length given: read as it comes all the same.
    assert httpx.put(f"{url}/big", content=body(), headers=AUTH, timeout=60).status_code == 200
    received = 0
    with httpx.stream("GET", f"{url}/big", headers=AUTH, timeout=60) as response:
        for chunk in response.iter_bytes():
            received += len(chunk)
    assert received == size
    # Neither direction held the object: the server grew by far less than its size.
    assert process.memory_info().rss - before < 40 * 1024 * 1024
    # A reader that goes away mid-download: the server stops reading the file and closes it.
    with httpx.stream("GET", f"{url}/big", headers=AUTH, timeout=60) as response:
        next(response.iter_raw(1024 * 1024))
    blobs = str(server.data_dir / "s3" / "blobs")
    deadline = time.monotonic() + 10
    while any(f.path.startswith(blobs) for f in process.open_files()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(f.path.startswith(blobs) for f in process.open_files())
