"""The embedded S3 store: buckets and objects, durable under one directory.

Layout under ``root`` (``<data_dir>/s3``)::

    index.db   the SQLite index (:mod:`coldbrew.s3.index`): what exists
    blobs/     content files (:mod:`coldbrew.s3.blobs`), named by random ids; objects of at
               most ``blobs.INLINE_MAX`` bytes have none (their bytes are in the index)
    tmp/       writes in progress

Every method blocks (file and database I/O): the HTTP layer calls them from worker threads. One
lock serializes index access; it is held for index statements and for opening or unlinking a
content file, never while object bytes are read or written, so a slow upload or download never
holds it.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from .blobs import Blobs, BlobWriter
from .checksums import Checksum, Digests
from .errors import (
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    InvalidRequest,
    NoSuchBucket,
    NoSuchKey,
    PreconditionFailed,
    S3Error,
)
from .index import Index, ObjectMeta, ObjectRow
from .listing import Listing, list_keys

log = logging.getLogger("coldbrew.s3")


@dataclass(frozen=True)
class Bucket:
    name: str
    created: float
    region: str


class S3Store:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.blobs = Blobs(root)
        self.index = Index(root / "index.db")
        self.lock = threading.Lock()
        removed = self.blobs.sweep(self.index.referenced_blobs())
        if removed:
            log.info("s3: removed %d unfinished write(s) left by an earlier run", removed)

    def close(self) -> None:
        with self.lock:
            self.index.close()

    # --- buckets ----------------------------------------------------------------------------

    def create_bucket(self, name: str, region: str) -> None:
        with self.lock:
            if not self.index.add_bucket(name, time.time(), region):
                raise BucketAlreadyOwnedByYou(BucketName=name)

    def bucket(self, name: str) -> Bucket:
        with self.lock:
            return self.require_bucket(name)

    def buckets(self) -> list[Bucket]:
        with self.lock:
            return [Bucket(*row) for row in self.index.buckets()]

    def delete_bucket(self, name: str) -> None:
        with self.lock:
            self.require_bucket(name)
            if self.index.bucket_has_objects(name):
                raise BucketNotEmpty(BucketName=name)
            self.blobs.delete(self.index.remove_bucket(name))

    # --- objects ----------------------------------------------------------------------------

    def writer(self, digests: Digests) -> BlobWriter:
        return self.blobs.writer(digests)

    def put(
        self,
        bucket: str,
        key: bytes,
        writer: BlobWriter,
        meta: ObjectMeta,
        checksum: str | None,
        if_none_match: bool,
    ) -> ObjectRow:
        """Publish what ``writer`` wrote as ``bucket/key``; ``checksum`` is the client's value (base64)."""
        kept, blob, data = self._seal_object(writer, checksum)
        row = ObjectRow(
            key, writer.digests.size, writer.digests.etag, time.time(), blob, _with_checksum(meta, kept), data
        )
        try:
            with self.lock:
                self.require_bucket(bucket)
                if if_none_match and self.index.object(bucket, key) is not None:
                    raise PreconditionFailed(Condition="If-None-Match")
                replaced = self.index.put_object(bucket, row)
                if replaced:
                    self.blobs.delete([replaced])
        except BaseException:
            self.blobs.delete([blob])
            raise
        return row

    def put_many(self, items: list[tuple[str, bytes, BlobWriter, ObjectMeta]]) -> list[S3Error | None]:
        """``put`` for many (bucket, key, writer, meta) at once, their index rows in one commit (a
        server writing many small objects of its own, such as async results); per item, the error
        that kept it from being written, if any."""
        errors: list[S3Error | None] = [None] * len(items)
        rows: list[tuple[int, str, ObjectRow]] = []
        for i, (bucket, key, writer, meta) in enumerate(items):
            try:
                kept, blob, data = self._seal_object(writer, None)
            except S3Error as e:
                errors[i] = e
                continue
            size, etag = writer.digests.size, writer.digests.etag
            rows.append(
                (i, bucket, ObjectRow(key, size, etag, time.time(), blob, _with_checksum(meta, kept), data))
            )
        with self.lock:
            valid = []
            for i, bucket, row in rows:
                try:
                    self.require_bucket(bucket)
                    valid.append((i, bucket, row))
                except S3Error as e:
                    errors[i] = e
                    self.blobs.delete([row.blob])
            try:
                replaced = self.index.put_objects([(bucket, row) for _, bucket, row in valid])
            except BaseException:
                self.blobs.delete([row.blob for _, _, row in valid])
                raise
            self.blobs.delete([blob for blob in replaced if blob])
        return errors

    def seal(self, writer: BlobWriter, checksum: str | None) -> tuple[Checksum | None, str]:
        """Check what ``writer`` received against the client's digests, then make it a content file
        on disk (not yet any object's); the checksum to keep and the file's id."""
        try:
            kept = writer.digests.finish(checksum)
            temp = writer.finish()
        except BaseException:
            writer.discard()
            raise
        return kept, self.blobs.publish(temp)

    def _seal_object(
        self, writer: BlobWriter, checksum: str | None
    ) -> tuple[Checksum | None, str, bytes | None]:
        """``seal`` for an object, whose content may stay in its index row: the checksum to keep,
        the content file's id ("" for none) and the content when it has no file."""
        held = writer.held()
        if held is None:
            return (*self.seal(writer, checksum), None)
        try:
            kept = writer.digests.finish(checksum)
        finally:
            writer.discard()
        return kept, "", held

    def head(self, bucket: str, key: bytes) -> ObjectRow:
        with self.lock:
            return self._object(bucket, key)

    def open(self, bucket: str, key: bytes) -> tuple[ObjectRow, BinaryIO]:
        """The object and its content, opened before any later write can replace it."""
        with self.lock:
            row = self._object(bucket, key)
            if row.data is not None:
                return row, io.BytesIO(row.data)
            return row, self.blobs.open(row.blob)

    def delete(self, bucket: str, keys: list[bytes]) -> set[bytes]:
        """Delete objects; the keys that existed (deleting a missing key is not an error in S3)."""
        with self.lock:
            self.require_bucket(bucket)
            removed = self.index.remove_objects(bucket, keys)
            self.blobs.delete(list(removed.values()))
            return set(removed)

    def copy(self, source: tuple[str, bytes], bucket: str, key: bytes, meta: ObjectMeta | None) -> ObjectRow:
        """Copy an object (``meta`` None keeps the source's metadata, S3's COPY directive)."""
        with self.lock:
            original = self._object(*source)
            self.require_bucket(bucket)
            if source == (bucket, key) and meta is None:
                raise InvalidRequest(
                    "This copy request is illegal because it is trying to copy an object to itself without "
                    "changing the object's metadata, storage class, website redirect location or encryption "
                    "attributes."
                )
            # Content files never change, so the copy is a second link to the same one.
            blob = self.blobs.link(original.blob) if not original.inline else ""
            kept = original.meta if meta is None else _with_checksum(meta, original.meta.checksum)
            row = ObjectRow(key, original.size, original.etag, time.time(), blob, kept, original.data)
            replaced = self.index.put_object(bucket, row)
            if replaced:
                self.blobs.delete([replaced])
            return row

    def list(self, bucket: str, prefix: bytes, delimiter: bytes, start: bytes, max_keys: int) -> Listing:
        with self.lock:
            self.require_bucket(bucket)

        def scan(first: bytes, stop: bytes | None, limit: int) -> list[ObjectRow]:
            with self.lock:  # per batch, so a large listing does not hold up writers
                return self.index.scan(bucket, first, stop, limit)

        return list_keys(scan, prefix, delimiter, start, max_keys)

    # --- under the lock (also for Uploads) -------------------------------------------------

    def require_bucket(self, name: str) -> Bucket:
        found = self.index.bucket(name)
        if found is None:
            raise NoSuchBucket(BucketName=name)
        return Bucket(name, *found)

    def _object(self, bucket: str, key: bytes) -> ObjectRow:
        row = self.index.object(bucket, key)
        if row is None:
            self.require_bucket(bucket)
            raise NoSuchKey(Key=key.decode("utf-8", "replace"))
        return row


def _with_checksum(meta: ObjectMeta, checksum: Checksum | None) -> ObjectMeta:
    return replace(meta, checksum=checksum)
