"""Multipart uploads through boto3: the low-level calls with S3's ETags and errors, and
upload_file / download_file as users run them (threaded parts, ranged GETs)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests.s3.conftest import error_code, status_of

MB = 1024 * 1024


def test_parts_complete_with_s3s_etag(s3: Any, bucket: str) -> None:
    parts_data = [os.urandom(5 * MB), os.urandom(5 * MB), b"tail"]
    upload = s3.create_multipart_upload(
        Bucket=bucket, Key="mp", ContentType="text/x-parts", Metadata={"m": "1"}
    )
    uid = upload["UploadId"]
    parts = []
    for number, data in enumerate(parts_data, start=1):
        etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=number, Body=data)["ETag"]
        assert etag == f'"{hashlib.md5(data).hexdigest()}"'
        parts.append({"PartNumber": number, "ETag": etag})
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid)
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, 5 * MB), (2, 5 * MB), (3, 4)]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [uid]
    with pytest.raises(ClientError) as not_yet:
        s3.head_object(Bucket=bucket, Key="mp")
    assert status_of(not_yet) == 404  # an upload is invisible until it completes
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=uid, MultipartUpload={"Parts": parts}
    )
    expected = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest() + "-3"
    assert done["ETag"] == f'"{expected}"'
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["Body"].read() == b"".join(parts_data) and got["ETag"] == done["ETag"]
    assert got["ContentType"] == "text/x-parts" and got["Metadata"] == {"m": "1"}
    assert got["PartsCount"] == 3
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    with pytest.raises(ClientError) as completed:
        s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid)
    assert error_code(completed) == "NoSuchUpload" and status_of(completed) == 404


def test_part_errors(s3: Any, bucket: str) -> None:
    uid = s3.create_multipart_upload(Bucket=bucket, Key="bad")["UploadId"]
    small = s3.upload_part(Bucket=bucket, Key="bad", UploadId=uid, PartNumber=1, Body=b"small")["ETag"]
    two = s3.upload_part(Bucket=bucket, Key="bad", UploadId=uid, PartNumber=2, Body=b"two")["ETag"]
    cases = {
        "InvalidPart": [{"PartNumber": 1, "ETag": '"0123456789abcdef0123456789abcdef"'}],
        "InvalidPartOrder": [{"PartNumber": 2, "ETag": two}, {"PartNumber": 1, "ETag": small}],
        "EntityTooSmall": [{"PartNumber": 1, "ETag": small}, {"PartNumber": 2, "ETag": two}],
    }
    for code, parts in cases.items():
        with pytest.raises(ClientError) as refused:
            s3.complete_multipart_upload(
                Bucket=bucket, Key="bad", UploadId=uid, MultipartUpload={"Parts": parts}
            )
        assert error_code(refused) == code and status_of(refused) == 400
    with pytest.raises(ClientError) as bad_number:
        s3.upload_part(Bucket=bucket, Key="bad", UploadId=uid, PartNumber=10001, Body=b"x")
    assert error_code(bad_number) == "InvalidArgument"
    # A single part may be small: it is the last one.
    s3.complete_multipart_upload(
        Bucket=bucket, Key="bad", UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": small}]}
    )
    assert s3.get_object(Bucket=bucket, Key="bad")["Body"].read() == b"small"


def test_abort_and_unknown_uploads(s3: Any, bucket: str) -> None:
    uid = s3.create_multipart_upload(Bucket=bucket, Key="ab")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="ab", UploadId=uid, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=bucket, Key="ab", UploadId=uid)
    for call in (
        lambda: s3.upload_part(Bucket=bucket, Key="ab", UploadId=uid, PartNumber=1, Body=b"x"),
        lambda: s3.abort_multipart_upload(Bucket=bucket, Key="ab", UploadId=uid),
        lambda: s3.list_parts(Bucket=bucket, Key="other", UploadId="made-up"),
    ):
        with pytest.raises(ClientError) as unknown:
            call()
        assert error_code(unknown) == "NoSuchUpload"


def test_upload_part_copy(s3: Any, bucket: str) -> None:
    source = os.urandom(6 * MB)
    s3.put_object(Bucket=bucket, Key="source", Body=source)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    first = s3.upload_part_copy(
        Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=1, CopySource=f"{bucket}/source",
        CopySourceRange=f"bytes=0-{5 * MB - 1}",
    )["CopyPartResult"]["ETag"]  # fmt: skip
    second = s3.upload_part_copy(
        Bucket=bucket,
        Key="assembled",
        UploadId=uid,
        PartNumber=2,
        CopySource={"Bucket": bucket, "Key": "source"},
    )["CopyPartResult"]["ETag"]
    parts = [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="assembled", UploadId=uid, MultipartUpload={"Parts": parts}
    )
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == source[: 5 * MB] + source


def test_large_upload_file_and_download_file(s3: Any, bucket: str, tmp_path: Path) -> None:
    """40 MB in 8 MB parts on boto3's threads, back by ranged GETs, as upload_file/download_file do."""
    data = os.urandom(40 * MB)
    source = tmp_path / "large.bin"
    source.write_bytes(data)
    config = TransferConfig(multipart_threshold=8 * MB, multipart_chunksize=8 * MB, max_concurrency=4)
    s3.upload_file(str(source), bucket, "large.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="large.bin", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-5"')
    # boto3 sent a CRC32 with every part: the object's checksum is S3's composite of theirs.
    assert head["ChecksumCRC32"].endswith("-5") and head["ChecksumType"] == "COMPOSITE"
    target = tmp_path / "back.bin"
    s3.download_file(bucket, "large.bin", str(target), Config=config)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
    copied = s3.copy({"Bucket": bucket, "Key": "large.bin"}, bucket, "copied.bin", Config=config)
    assert copied is None
    assert s3.head_object(Bucket=bucket, Key="copied.bin")["ContentLength"] == len(data)
