"""Objects through boto3: put/get/head/delete/copy, ranges, metadata, conditions, presigned URLs."""

from __future__ import annotations

import base64
import io
import zlib
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from coldbrew.s3.blobs import INLINE_MAX
from tests.s3.conftest import error_code, signed_headers, status_of
from tests.support import ColdbrewServer


def test_put_get_head_delete_with_metadata(s3: Any, bucket: str) -> None:
    put = s3.put_object(
        Bucket=bucket, Key="dir/hello.txt", Body=b"hello world", ContentType="text/plain",
        Metadata={"owner": "ana", "Mixed-Case": "v"}, CacheControl="max-age=60", ContentDisposition="inline",
    )  # fmt: skip
    assert put["ETag"] == '"5eb63bbbe01eeed093cb22bb8f5acdc3"'  # MD5 of the body, as S3's
    crc = base64.b64encode(zlib.crc32(b"hello world").to_bytes(4, "big")).decode()
    assert put["ChecksumCRC32"] == crc  # botocore sent one; S3 echoes it
    got = s3.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert got["Body"].read() == b"hello world"
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"owner": "ana", "mixed-case": "v"}
    assert got["CacheControl"] == "max-age=60" and got["ContentDisposition"] == "inline"
    assert got["ETag"] == put["ETag"] and got["ContentLength"] == 11
    # botocore asks for the checksum (x-amz-checksum-mode) and checks the body against it.
    assert got["ChecksumCRC32"] == crc
    assert got["ResponseMetadata"]["HTTPHeaders"]["accept-ranges"] == "bytes"
    head = s3.head_object(Bucket=bucket, Key="dir/hello.txt")
    assert head["ContentLength"] == 11 and head["ETag"] == put["ETag"] and head["Metadata"]["owner"] == "ana"
    s3.delete_object(Bucket=bucket, Key="dir/hello.txt")
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert error_code(missing) == "NoSuchKey" and status_of(missing) == 404
    assert missing.value.response["Error"]["Key"] == "dir/hello.txt"
    s3.delete_object(Bucket=bucket, Key="dir/hello.txt")  # deleting a missing key is no error in S3


def test_default_content_type_and_empty_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    got = s3.get_object(Bucket=bucket, Key="empty")
    assert got["Body"].read() == b"" and got["ContentType"] == "binary/octet-stream"
    assert got["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'


def test_overwrite_replaces_the_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"one")
    s3.put_object(Bucket=bucket, Key="k", Body=b"two", Metadata={"v": "2"})
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == b"two" and got["Metadata"] == {"v": "2"}


def test_ranges(s3: Any, bucket: str) -> None:
    data = bytes(range(256)) * 40
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    part = s3.get_object(Bucket=bucket, Key="r", Range="bytes=10-19")
    assert part["Body"].read() == data[10:20]
    assert (
        part["ContentRange"] == f"bytes 10-19/{len(data)}"
        and part["ResponseMetadata"]["HTTPStatusCode"] == 206
    )
    assert "ChecksumCRC32" not in part  # a checksum is of the whole object
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=-5")["Body"].read() == data[-5:]
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=10200-")["Body"].read() == data[10200:]
    assert s3.get_object(Bucket=bucket, Key="r", Range=f"bytes=0-{10**9}")["Body"].read() == data
    # Not a range S3 understands: the whole object, as S3 answers.
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=5-2")["Body"].read() == data
    with pytest.raises(ClientError) as unsatisfiable:
        s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={len(data)}-")
    assert error_code(unsatisfiable) == "InvalidRange" and status_of(unsatisfiable) == 416


def test_conditional_requests(s3: Any, bucket: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"x")["ETag"]
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"x"
    with pytest.raises(ClientError) as failed:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0000"')
    assert error_code(failed) == "PreconditionFailed" and status_of(failed) == 412
    with pytest.raises(ClientError) as unchanged:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert status_of(unchanged) == 304
    with pytest.raises(ClientError) as exists:
        s3.put_object(Bucket=bucket, Key="c", Body=b"y", IfNoneMatch="*")
    assert error_code(exists) == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="c")["Body"].read() == b"x"


def test_copy_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"payload", ContentType="text/csv", Metadata={"a": "1"})
    other = f"{bucket}-copy"
    s3.create_bucket(Bucket=other)
    copied = s3.copy_object(Bucket=other, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    got = s3.get_object(Bucket=other, Key="dst")
    assert (
        got["Body"].read() == b"payload"
        and got["Metadata"] == {"a": "1"}
        and got["ContentType"] == "text/csv"
    )
    assert copied["CopyObjectResult"]["ETag"] == got["ETag"]
    replaced = s3.copy_object(
        Bucket=bucket, Key="src", CopySource=f"{bucket}/src", MetadataDirective="REPLACE",
        Metadata={"b": "2"}, ContentType="application/json",
    )  # fmt: skip
    assert replaced["CopyObjectResult"]["ETag"] == got["ETag"]
    head = s3.head_object(Bucket=bucket, Key="src")
    assert head["Metadata"] == {"b": "2"} and head["ContentType"] == "application/json"
    # The copy is independent of its source.
    s3.delete_object(Bucket=bucket, Key="src")
    assert s3.get_object(Bucket=other, Key="dst")["Body"].read() == b"payload"
    with pytest.raises(ClientError) as to_itself:
        s3.copy_object(Bucket=other, Key="dst", CopySource=f"{other}/dst")
    assert error_code(to_itself) == "InvalidRequest"
    with pytest.raises(ClientError) as missing:
        s3.copy_object(Bucket=other, Key="x", CopySource=f"{bucket}/gone")
    assert error_code(missing) == "NoSuchKey"


def test_keys_that_are_paths_elsewhere_are_only_names(s3: Any, bucket: str, server: ColdbrewServer) -> None:
    keys = [
        "../../../etc/passwd",
        "/abs/path",
        "a//b",
        "./x",
        "..",
        "with space+plus%&?#",
        "ünï/cødé",
        "a" * 1024,
    ]
    keys += ["both", "both/file", "both/"]  # a key, a "folder" of it and its marker: all three coexist
    # Bodies too large to be kept in the index: each gets a content file, whose name is checked below.
    bodies = {key: str(i).encode() * (INLINE_MAX // len(str(i)) + 1) for i, key in enumerate(keys)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    for key, body in bodies.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(listed, key=lambda k: k.encode()) == listed and set(listed) == set(keys)
    # Nothing was written outside the store, and inside it only under content ids.
    root = server.data_dir / "s3"
    for path in server.data_dir.parent.rglob("*"):
        assert path.name != "passwd"
    blobs = [p for p in (root / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) >= len(keys)  # the server's other tests' files may be there too
    assert all(len(p.name) == 32 and p.parent.parent == root / "blobs" for p in blobs)
    with pytest.raises(ClientError) as too_long:
        s3.put_object(Bucket=bucket, Key="a" * 1025, Body=b"")
    assert error_code(too_long) == "KeyTooLongError"


def test_a_nul_in_a_key_is_refused(server: ColdbrewServer, bucket: str) -> None:
    url = f"{server.url}/{bucket}/a%00b"
    response = httpx.put(url, content=b"x", headers=signed_headers(url, "PUT", b"x"))
    assert response.status_code == 400 and b"<Code>InvalidArgument</Code>" in response.content


@pytest.mark.parametrize("signature", ["default", "s3v4"])
def test_presigned_get_and_put(s3: Any, bucket: str, signature: str) -> None:
    # boto3 presigns S3 URLs with signature version 2 unless told otherwise; both are routed here.
    if signature == "s3v4":
        s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "p/obj"}, ExpiresIn=60)
    assert ("X-Amz-Credential=" in put_url) == (signature == "s3v4")
    assert httpx.put(put_url, content=b"presigned body").status_code == 200
    get_url = s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": "p/obj", "ResponseContentType": "text/x-test"},
        ExpiresIn=60,
    )
    got = httpx.get(get_url)
    assert got.status_code == 200 and got.content == b"presigned body"
    assert got.headers["content-type"] == "text/x-test"  # response-content-type overrides
    missing = httpx.get(s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "nope"}))
    assert missing.status_code == 404 and b"<Code>NoSuchKey</Code>" in missing.content


def test_virtual_hosted_style(server: ColdbrewServer, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="v/key.txt", Body=b"virtual")
    host = f"{bucket}.localhost:{server.port}"
    url = f"http://{host}/v/key.txt"
    response = httpx.get(f"{server.url}/v/key.txt", headers={**signed_headers(url), "Host": host})
    assert response.status_code == 200 and response.content == b"virtual"
    signed = signed_headers(f"http://{host}/?list-type=2")
    listing = httpx.get(f"{server.url}/?list-type=2", headers={**signed, "Host": host})
    assert b"<Key>v/key.txt</Key>" in listing.content


def test_file_transfers(s3: Any, bucket: str, tmp_path: Any) -> None:
    source = tmp_path / "small.bin"
    source.write_bytes(b"abc" * 1000)
    s3.upload_file(str(source), bucket, "small.bin")
    s3.download_file(bucket, "small.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    buffer = io.BytesIO()
    s3.download_fileobj(bucket, "small.bin", buffer)
    assert buffer.getvalue() == source.read_bytes()
