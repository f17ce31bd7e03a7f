"""The embedded S3's pieces on their own, without a server: aws-chunked decoding in any split,
listing order and pages, ranges, names, checksums, and the store's sweep of what crashes leave."""

from __future__ import annotations

import base64
import zlib
from pathlib import Path

import pytest

from coldbrew.s3.blobs import INLINE_MAX
from coldbrew.s3.checksums import Digests, composite, multipart_etag
from coldbrew.s3.chunked import ChunkedDecoder
from coldbrew.s3.errors import InvalidBucketName, InvalidRange, S3Error
from coldbrew.s3.index import ObjectMeta, ObjectRow
from coldbrew.s3.listing import Scan, list_keys, start_after, successor
from coldbrew.s3.metadata import byte_range
from coldbrew.s3.names import check_bucket_name
from coldbrew.s3.store import S3Store


def test_chunked_decoding_does_not_depend_on_how_the_body_is_split() -> None:
    payload = bytes(range(256)) * 50
    body = b"".join(f"{n:x};chunk-signature=ab\r\n".encode() + payload[:n] + b"\r\n" for n in (5000, 7800))
    body += b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature:cd\r\n\r\n"
    for step in (1, 7, 4096, len(body)):
        decoder = ChunkedDecoder()
        out = b"".join(b"".join(decoder.feed(body[i : i + step])) for i in range(0, len(body), step))
        decoder.finish()
        assert out == payload[:5000] + payload[:7800]
        assert decoder.trailers == {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-trailer-signature": "cd"}


def _rows(keys: list[bytes]) -> list[ObjectRow]:
    return [ObjectRow(k, 1, "e", 0.0, "b", ObjectMeta()) for k in sorted(keys)]


def _scan(rows: list[ObjectRow]) -> Scan:
    def scan(start: bytes, stop: bytes | None, limit: int) -> list[ObjectRow]:
        return [r for r in rows if r.key >= start and (stop is None or r.key < stop)][:limit]

    return scan


def test_listing_pages_cover_everything_once() -> None:
    keys = [f"d{i % 7}/k{i}".encode() for i in range(200)] + [b"top", b"\xff\xff/x", b"d1"]
    scan = _scan(_rows(keys))
    for delimiter in (b"", b"/"):
        seen: list[bytes] = []
        start = b""
        while True:
            page = list_keys(scan, b"", delimiter, start, 3)
            seen += [r.key for r in page.objects] + page.prefixes
            if not page.truncated:
                break
            assert page.next_start is not None
            start = page.next_start
        expected = sorted({k.split(b"/")[0] + b"/" if delimiter and b"/" in k else k for k in keys})
        assert sorted(seen) == expected and len(seen) == len(expected)


def test_prefix_arithmetic() -> None:
    assert successor(b"ab") == b"ac" and successor(b"a\xff") == b"b" and successor(b"\xff") is None
    assert start_after(b"d1/", b"", b"/") == b"d10"  # a common prefix: skip what it rolled up
    assert start_after(b"d1/k3", b"", b"/") == b"d1/k3\x00"


def test_byte_ranges() -> None:
    assert byte_range("bytes=0-0", 10) == (0, 0)
    assert byte_range("bytes=-3", 10) == (7, 9)
    assert byte_range("bytes=-30", 10) == (0, 9)
    assert byte_range("bytes=8-", 10) == (8, 9)
    assert byte_range("bytes=1-2,4-5", 10) is None  # several ranges: the whole object, as S3
    assert byte_range("items=1-2", 10) is None
    for header in ("bytes=10-", "bytes=-0"):
        with pytest.raises(InvalidRange):
            byte_range(header, 10)


def test_bucket_names() -> None:
    assert check_bucket_name("my.bucket-1") == "my.bucket-1"
    for bad in ("ab", "a" * 64, "Caps", "a_b", "-a-", "a..b", "192.168.1.1", "a.-b"):
        with pytest.raises(InvalidBucketName):
            check_bucket_name(bad)


def test_checksums() -> None:
    digests = Digests("CRC32")
    digests.update(b"hello ")
    digests.update(b"world")
    crc = base64.b64encode(zlib.crc32(b"hello world").to_bytes(4, "big")).decode()
    kept = digests.finish(None)
    assert kept is not None and kept.value == crc and digests.etag == "5eb63bbbe01eeed093cb22bb8f5acdc3"
    with pytest.raises(S3Error) as bad:
        Digests("CRC32").finish(crc)
    assert bad.value.code == "BadDigest"
    parts = composite("CRC32", [crc, crc])
    assert parts is not None and parts.value.endswith("-2") and parts.type == "COMPOSITE"
    assert multipart_etag([b"\x00" * 16]).endswith("-1")


def test_the_store_sweeps_what_a_crash_left(tmp_path: Path) -> None:
    store = S3Store(tmp_path / "s3")
    store.create_bucket("kept", "us-east-1")
    writer = store.writer(Digests())
    writer.write(b"d" * (INLINE_MAX + 1))  # a content file of its own, which the sweep must keep
    row = store.put("kept", b"k", writer, ObjectMeta(), None, False)
    store.close()
    orphan = tmp_path / "s3" / "blobs" / "ab" / ("ab" + "0" * 30)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"published, never indexed")
    (tmp_path / "s3" / "tmp" / "half").write_bytes(b"half-written")
    reopened = S3Store(tmp_path / "s3")
    assert not orphan.exists() and list((tmp_path / "s3" / "tmp").iterdir()) == []
    found, content = reopened.open("kept", b"k")
    with content:
        assert found == row and content.read() == b"d" * (INLINE_MAX + 1)
    reopened.close()


def test_the_url_the_server_reads_its_own_s3_at(monkeypatch: pytest.MonkeyPatch) -> None:
    from coldbrew.settings import Settings

    monkeypatch.delenv("COLDBREW_S3", raising=False)
    assert Settings(host="0.0.0.0", port=9000).local_url == "http://127.0.0.1:9000"
    assert Settings(host="::", port=9000).local_url == "http://[::1]:9000"
    assert Settings(host="10.1.2.3", port=80).local_url == "http://10.1.2.3:80"
    assert Settings().s3 == "embedded" and Settings(s3="external").s3 == "external"


def test_signature_version_2_is_routed_to_s3() -> None:
    from coldbrew.gateway.service_router import service_of

    # boto3's default presigned S3 URL, parameters in either order, and an old client's header.
    assert service_of("GET", "/b/k", "AWSAccessKeyId=any&Signature=s%3D&Expires=1", {}) == "s3"
    assert service_of("PUT", "/b/k", "Expires=1&Signature=s%3D&AWSAccessKeyId=any", {}) == "s3"
    assert service_of("GET", "/b/k", "", {b"authorization": b"AWS any:c2ln"}) == "s3"
    assert service_of("GET", "/b/k", "Signature=only", {}) is None
