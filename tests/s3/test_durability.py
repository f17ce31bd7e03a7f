"""A SIGKILL of the server in the middle of uploads: after a restart on the same data dir no
partial object is visible, completed objects are intact, and nothing half-written is left."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.s3.test_wire import AUTH
from tests.support import ColdbrewServer

MB = 1024 * 1024


def _client(server: ColdbrewServer) -> Any:
    return boto3.client(
        "s3", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="any",
        aws_secret_access_key="any", config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip


def _slow_put(server: ColdbrewServer, path: str, size: int, sent: threading.Event) -> None:
    """A PUT that sends half its body and then stalls, as a slow client does, until the server dies."""
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            head = (f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                    f"Authorization: {AUTH['Authorization']}\r\nContent-Length: {size}\r\n\r\n")  # fmt: skip
            sock.sendall(head.encode() + os.urandom(size // 2))
            sent.set()
            sock.recv(1)  # until the server is killed
    except OSError:
        sent.set()


def test_sigkill_during_uploads(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ColdbrewServer(data_dir).start()
    s3 = _client(server)
    s3.create_bucket(Bucket="durable")
    done = {f"done/{i}": os.urandom(MB + i) for i in range(3)}
    for key, body in done.items():
        s3.put_object(Bucket="durable", Key=key, Body=body)
    s3.put_object(Bucket="durable", Key="replaced", Body=b"old version")
    # A multipart upload with one part stored and the upload not completed.
    uid = s3.create_multipart_upload(Bucket="durable", Key="multi")["UploadId"]
    part = os.urandom(5 * MB)
    etag = s3.upload_part(Bucket="durable", Key="multi", UploadId=uid, PartNumber=1, Body=part)["ETag"]
    # Uploads in flight when the server dies: a new key, and a new version of an existing one.
    events = [threading.Event(), threading.Event()]
    threads = [
        threading.Thread(target=_slow_put, args=(server, "/durable/partial", 8 * MB, events[0]), daemon=True),
        threading.Thread(
            target=_slow_put, args=(server, "/durable/replaced", 8 * MB, events[1]), daemon=True
        ),
    ]
    for thread in threads:
        thread.start()
    for event in events:
        assert event.wait(10)
    tmp = data_dir / "s3" / "tmp"
    deadline = time.monotonic() + 10
    while len([p for p in tmp.iterdir() if p.stat().st_size > 0]) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # until both writes are under way on disk
    assert len(list(tmp.iterdir())) == 2
    server.kill()
    for thread in threads:
        thread.join(5)

    restarted = ColdbrewServer(data_dir).start()
    try:
        s3 = _client(restarted)
        with pytest.raises(ClientError) as partial:
            s3.head_object(Bucket="durable", Key="partial")
        assert partial.value.response["Error"]["Code"] == "404"
        assert s3.get_object(Bucket="durable", Key="replaced")["Body"].read() == b"old version"
        for key, body in done.items():
            got = s3.get_object(Bucket="durable", Key=key)
            assert got["Body"].read() == body and got["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
        assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="durable")["Contents"]) == sorted(
            [*done, "replaced"]
        )
        assert list((data_dir / "s3" / "tmp").iterdir()) == []  # the half-written files are gone
        # The stored part survived, and the upload completes after the restart.
        assert [p["ETag"] for p in s3.list_parts(Bucket="durable", Key="multi", UploadId=uid)["Parts"]] == [
            etag
        ]
        parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
        s3.complete_multipart_upload(Bucket="durable", Key="multi", UploadId=uid, MultipartUpload=parts)
        assert s3.get_object(Bucket="durable", Key="multi")["Body"].read() == part
        blobs = {p.name for p in (data_dir / "s3" / "blobs").rglob("*") if p.is_file()}
        # One content file per large object ("replaced" is small: kept in the index), nothing orphaned.
        assert len(blobs) == len(done) + 1
    finally:
        restarted.stop()
