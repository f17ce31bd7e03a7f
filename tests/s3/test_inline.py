"""Small objects kept in the index instead of a content file of their own (blobs.INLINE_MAX):
the same answers through boto3 as file-backed ones, no file left behind when they are replaced,
and an index written before the change still opens."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from coldbrew.s3 import S3Store
from coldbrew.s3.blobs import INLINE_MAX
from coldbrew.s3.checksums import Digests
from coldbrew.s3.index import ObjectMeta
from tests.support import ColdbrewServer


def _files(root: Path) -> set[str]:
    return {p.name for p in (root / "blobs").rglob("*") if p.is_file()}


@pytest.mark.parametrize("size", [0, 1, INLINE_MAX - 1, INLINE_MAX, INLINE_MAX + 1, 3 * INLINE_MAX])
def test_every_size_round_trips_with_ranges_and_etags(s3: Any, bucket: str, size: int) -> None:
    body = os.urandom(size)
    put = s3.put_object(Bucket=bucket, Key="k", Body=body, ContentType="application/x-test")
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == body and got["ContentType"] == "application/x-test"
    assert s3.head_object(Bucket=bucket, Key="k")["ContentLength"] == size
    if size > 2:
        part = s3.get_object(Bucket=bucket, Key="k", Range=f"bytes=1-{size - 2}")
        assert part["Body"].read() == body[1 : size - 1]
        assert part["ContentRange"] == f"bytes 1-{size - 2}/{size}"


def test_copies_of_small_and_large_objects(s3: Any, bucket: str) -> None:
    small, large = b"small one", os.urandom(INLINE_MAX + 10)
    s3.put_object(Bucket=bucket, Key="small", Body=small, Metadata={"a": "1"})
    s3.put_object(Bucket=bucket, Key="large", Body=large)
    s3.copy_object(Bucket=bucket, Key="small-copy", CopySource={"Bucket": bucket, "Key": "small"})
    s3.copy_object(Bucket=bucket, Key="large-copy", CopySource={"Bucket": bucket, "Key": "large"})
    s3.delete_object(Bucket=bucket, Key="small")
    copied = s3.get_object(Bucket=bucket, Key="small-copy")
    assert copied["Body"].read() == small and copied["Metadata"] == {"a": "1"}
    assert s3.get_object(Bucket=bucket, Key="large-copy")["Body"].read() == large
    # A small object is a valid source of UploadPartCopy, too.
    upload = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    etag = s3.upload_part_copy(
        Bucket=bucket, Key="assembled", UploadId=upload, PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "small-copy"},
    )["CopyPartResult"]["ETag"]  # fmt: skip
    s3.complete_multipart_upload(
        Bucket=bucket, Key="assembled", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )  # fmt: skip
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == small


def test_replacing_between_sizes_leaves_no_file_and_survives_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ColdbrewServer(data_dir).start()
    try:
        s3 = server.client("s3")
        s3.create_bucket(Bucket="inline-test")
        root = data_dir / "s3"
        s3.put_object(Bucket="inline-test", Key="k", Body=b"tiny")
        assert _files(root) == set()
        large = os.urandom(INLINE_MAX + 1)
        s3.put_object(Bucket="inline-test", Key="k", Body=large)
        assert len(_files(root)) == 1
        s3.put_object(Bucket="inline-test", Key="k", Body=b"tiny again")
        assert _files(root) == set()  # the large version's file went with it
        s3.put_object(Bucket="inline-test", Key="gone", Body=b"x")
        s3.delete_objects(Bucket="inline-test", Delete={"Objects": [{"Key": "gone"}]})
        server.kill()
        server = ColdbrewServer(data_dir).start()
        s3 = server.client("s3")
        assert s3.get_object(Bucket="inline-test", Key="k")["Body"].read() == b"tiny again"
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="inline-test")["Contents"]] == ["k"]
    finally:
        server.stop()


def test_an_index_from_before_inline_objects_opens_and_reads(tmp_path: Path) -> None:
    root = tmp_path / "s3"
    store = S3Store(root)
    store.create_bucket("b", "us-east-1")
    writer = store.writer(Digests())
    writer.write(os.urandom(INLINE_MAX + 1))
    store.put("b", b"old", writer, ObjectMeta(), None, False)
    store.close()
    # The index as the version before wrote it: no data column, and a small object in a file of
    # its own, as every object was then.
    small = root / "blobs" / "ab" / ("ab" + "1" * 30)
    small.parent.mkdir(exist_ok=True)
    small.write_bytes(b"small, from before")
    with sqlite3.connect(root / "index.db") as db:
        db.execute("ALTER TABLE objects DROP COLUMN data")
        meta = db.execute("SELECT meta FROM objects").fetchone()[0]
        db.execute(
            "INSERT INTO objects (bucket, key, size, etag, modified, blob, meta) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("b", b"small-old", 18, hashlib.md5(b"small, from before").hexdigest(), 0.0, small.name, meta),
        )
    store = S3Store(root)
    try:
        row, content = store.open("b", b"old")
        with content:
            assert len(content.read()) == row.size == INLINE_MAX + 1
        row, content = store.open("b", b"small-old")
        with content:
            assert not row.inline and content.read() == b"small, from before"
        assert small.exists()  # still referenced: the sweep at start kept it
        small = store.writer(Digests())
        small.write(b"new and small")
        store.put("b", b"new", small, ObjectMeta(), None, False)
        _, content = store.open("b", b"new")
        assert content.read() == b"new and small"
    finally:
        store.close()


def test_a_small_multipart_part_is_still_a_file(tmp_path: Path) -> None:
    server = ColdbrewServer(tmp_path / "data").start()
    try:
        s3 = server.client("s3")
        s3.create_bucket(Bucket="inline-test")
        files = tmp_path / "data" / "s3" / "blobs"
        upload = s3.create_multipart_upload(Bucket="inline-test", Key="m")["UploadId"]
        etag = s3.upload_part(Bucket="inline-test", Key="m", UploadId=upload, PartNumber=1, Body=b"one part")[
            "ETag"
        ]
        assert len(_files(files.parent)) == 1  # the part's file: parts are assembled from files
        s3.complete_multipart_upload(
            Bucket="inline-test", Key="m", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
        )  # fmt: skip
        assert s3.get_object(Bucket="inline-test", Key="m")["Body"].read() == b"one part"
        assert len(_files(files.parent)) == 1  # the object's, the part's gone
    finally:
        server.stop()
