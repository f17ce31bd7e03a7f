"""The S3 a job reads its inputs from and writes its outputs to: in-process for the embedded store,
boto3 for an external S3 (configured the standard way: ``AWS_ENDPOINT_URL_S3``, credentials).

Every method blocks: call them from worker threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from coldbrew.artifacts.s3 import make_client
from coldbrew.s3 import S3Store
from coldbrew.s3.checksums import Digests
from coldbrew.s3.errors import S3Error
from coldbrew.s3.index import ObjectMeta
from coldbrew.serving.targets import S3Url

_PAGE = 1000


class StorageError(Exception):
    """An input that cannot be listed or read, or an output that cannot be written; ``str()`` says
    why, in words fit for a FailureReason."""


class Storage(Protocol):
    def keys(self, url: S3Url) -> Iterator[str]:
        """Every key beginning with ``url.key``, in S3's order."""

    def open(self, url: S3Url) -> BinaryIO:
        """The object's content as a stream."""

    def write(self, url: S3Url, body: bytes, content_type: str) -> None: ...


class EmbeddedStorage:
    def __init__(self, store: S3Store) -> None:
        self.store = store

    def keys(self, url: S3Url) -> Iterator[str]:
        start = b""
        while True:
            try:
                listing = self.store.list(url.bucket, url.key.encode(), b"", start, _PAGE)
            except S3Error as e:
                raise StorageError(f"Could not list {url}: {e.message}") from None
            for row in listing.objects:
                yield row.key.decode("utf-8", "replace")
            if not listing.truncated or listing.next_start is None:
                return
            start = listing.next_start  # inclusive

    def open(self, url: S3Url) -> BinaryIO:
        try:
            _, content = self.store.open(url.bucket, url.key.encode())
        except S3Error as e:
            raise StorageError(f"Could not read {url}: {e.message}") from None
        return content

    def write(self, url: S3Url, body: bytes, content_type: str) -> None:
        writer = self.store.writer(Digests())
        try:
            writer.write(body)
        except BaseException:
            writer.discard()
            raise
        try:
            self.store.put(
                url.bucket, url.key.encode(), writer, ObjectMeta(content_type=content_type), None, False
            )
        except S3Error as e:
            raise StorageError(f"Could not write {url}: {e.message}") from None


class BotoStorage:
    def __init__(self, client: Any | None = None) -> None:
        self.client = client or make_client()

    def keys(self, url: S3Url) -> Iterator[str]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=url.bucket, Prefix=url.key)
            for page in pages:
                for item in page.get("Contents", []):
                    yield str(item["Key"])
        except (ClientError, BotoCoreError) as e:
            raise StorageError(f"Could not list {url}: {_reason(e)}") from None

    def open(self, url: S3Url) -> BinaryIO:
        try:
            body: BinaryIO = self.client.get_object(Bucket=url.bucket, Key=url.key)["Body"]
        except (ClientError, BotoCoreError) as e:
            raise StorageError(f"Could not read {url}: {_reason(e)}") from None
        return body

    def write(self, url: S3Url, body: bytes, content_type: str) -> None:
        try:
            self.client.put_object(Bucket=url.bucket, Key=url.key, Body=body, ContentType=content_type)
        except (ClientError, BotoCoreError) as e:
            raise StorageError(f"Could not write {url}: {_reason(e)}") from None


def _reason(e: Exception) -> str:
    if isinstance(e, ClientError):
        error = e.response.get("Error", {})
        return f"{error.get('Code')} {error.get('Message', '')}".strip()
    return str(e)
