"""Multipart uploads: parts stored as content files of their own, joined into one at completion.

A part is written like an object (temp file, fsync, rename, then its index row), so a crash
leaves each part either stored or not. Completion writes the joined object to a new content
file first and then, in one transaction, adds the object and drops the upload: the object
appears whole or not at all.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from .blobs import BlobWriter, copy_range, read_range
from .checksums import Checksum, Digests, composite, full_object, multipart_etag
from .errors import (
    EntityTooSmall,
    InvalidArgument,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    MalformedXML,
    NoSuchUpload,
    PreconditionFailed,
)
from .index import ObjectMeta, ObjectRow, PartRow, UploadRow
from .store import S3Store

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
MAX_PARTS = 10_000


@dataclass(frozen=True)
class RequestedPart:
    """One <Part> of a CompleteMultipartUpload request."""

    number: int
    etag: str  # without quotes
    checksum: str | None


class Uploads:
    def __init__(self, store: S3Store) -> None:
        self.store = store

    def create(self, bucket: str, key: bytes, meta: ObjectMeta) -> UploadRow:
        upload = UploadRow(secrets.token_urlsafe(48), bucket, key, time.time(), meta)
        with self.store.lock:
            self.store.require_bucket(bucket)
            self.store.index.add_upload(upload)
        return upload

    def get(self, bucket: str, key: bytes, upload_id: str) -> UploadRow:
        with self.store.lock:
            return self._upload(bucket, key, upload_id)

    def put_part(
        self, bucket: str, key: bytes, upload_id: str, number: int, writer: BlobWriter, checksum: str | None
    ) -> PartRow:
        kept, blob = self.store.seal(writer, checksum)
        value = kept.value if kept is not None else None
        part = PartRow(number, writer.digests.size, writer.digests.etag, time.time(), blob, value)
        self._add_part(bucket, key, upload_id, part)
        return part

    def copy_part(
        self,
        bucket: str,
        key: bytes,
        upload_id: str,
        number: int,
        source: tuple[str, bytes],
        span: tuple[int, int] | None,
    ) -> PartRow:
        """UploadPartCopy: bytes ``span`` (start, length; None for all) of an object as a part."""
        with self.store.lock:
            algorithm = self._upload(bucket, key, upload_id).meta.checksum_algorithm
        row, content = self.store.open(*source)
        with content:
            start, length = span if span is not None else (0, row.size)
            if start + length > row.size:
                raise InvalidRange(
                    RangeRequested=f"bytes={start}-{start + length - 1}", ActualObjectSize=str(row.size)
                )
            writer = self.store.writer(Digests(algorithm))
            try:
                writer.copy_from(content, start, length)
            except BaseException:
                writer.discard()
                raise
        return self.put_part(bucket, key, upload_id, number, writer, None)

    def complete(
        self, bucket: str, key: bytes, upload_id: str, requested: list[RequestedPart], if_none_match: bool
    ) -> ObjectRow:
        if not requested:
            raise MalformedXML("You must specify at least one part.")
        numbers = [p.number for p in requested]
        if numbers != sorted(set(numbers)):
            raise InvalidPartOrder(UploadId=upload_id)
        with self.store.lock:
            upload = self._upload(bucket, key, upload_id)
            stored = {p.number: p for p in self.store.index.parts(upload_id)}
            chosen = [self._match(p, stored.get(p.number), upload_id) for p in requested]
            for part in chosen[:-1]:
                if part.size < MIN_PART_SIZE:
                    raise EntityTooSmall(
                        ProposedSize=str(part.size),
                        MinSizeAllowed=str(MIN_PART_SIZE),
                        PartNumber=str(part.number),
                    )
            # Opened under the lock: a part uploaded again meanwhile cannot pull a file away.
            files = [self.store.blobs.open(p.blob) for p in chosen]
        try:
            checksum, blob = self._join(upload, chosen, files)
        finally:
            for f in files:
                f.close()
        size = sum(p.size for p in chosen)
        etag = multipart_etag([bytes.fromhex(p.etag) for p in chosen])
        meta = replace(
            upload.meta, checksum=checksum, checksum_algorithm=None, checksum_type=None, parts=len(chosen)
        )
        row = ObjectRow(key, size, etag, time.time(), blob, meta)
        try:
            with self.store.lock:
                self._upload(bucket, key, upload_id)
                if if_none_match and self.store.index.object(bucket, key) is not None:
                    raise PreconditionFailed(Condition="If-None-Match")
                self.store.blobs.delete(self.store.index.remove_upload(upload_id, completed=(bucket, row)))
        except BaseException:
            self.store.blobs.delete([blob])
            raise
        return row

    def abort(self, bucket: str, key: bytes, upload_id: str) -> None:
        with self.store.lock:
            self._upload(bucket, key, upload_id)
            self.store.blobs.delete(self.store.index.remove_upload(upload_id))

    def parts(
        self, bucket: str, key: bytes, upload_id: str, after: int, limit: int
    ) -> tuple[UploadRow, list[PartRow]]:
        with self.store.lock:
            upload = self._upload(bucket, key, upload_id)
            return upload, self.store.index.parts(upload_id, after, limit)

    def uploads(self, bucket: str, start: bytes, limit: int) -> list[UploadRow]:
        with self.store.lock:
            self.store.require_bucket(bucket)
            return self.store.index.uploads(bucket, start, limit)

    # --- helpers ----------------------------------------------------------------------------

    def _add_part(self, bucket: str, key: bytes, upload_id: str, part: PartRow) -> None:
        try:
            with self.store.lock:
                self._upload(bucket, key, upload_id)
                replaced = self.store.index.put_part(upload_id, part)
                if replaced:
                    self.store.blobs.delete([replaced])
        except BaseException:
            self.store.blobs.delete([part.blob])
            raise

    def _join(
        self, upload: UploadRow, parts: list[PartRow], files: list[BinaryIO]
    ) -> tuple[Checksum | None, str]:
        """Concatenate the parts into a new content file; the object's checksum and the file's id."""
        temp = self.store.blobs.temp_path()
        try:
            with open(temp, "wb", buffering=0) as out:
                for part, content in zip(parts, files, strict=True):
                    copy_range(content, out, 0, part.size)
                os.fsync(out.fileno())
            checksum = self._checksum(upload, parts, temp)
            return checksum, self.store.blobs.publish(temp)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _checksum(self, upload: UploadRow, parts: list[PartRow], joined: Path) -> Checksum | None:
        algorithm = upload.meta.checksum_algorithm
        values = [p.checksum for p in parts]
        if algorithm is None:
            return None
        if upload.meta.checksum_type == "FULL_OBJECT":
            whole = full_object(algorithm)
            if whole is None:
                return None
            with open(joined, "rb") as content:
                for block in read_range(content, 0, sum(p.size for p in parts)):
                    whole.update(block)
            return Checksum(algorithm, base64.b64encode(whole.digest()).decode())
        if any(v is None for v in values):
            return None
        return composite(algorithm, [v for v in values if v is not None])

    def _match(self, requested: RequestedPart, stored: PartRow | None, upload_id: str) -> PartRow:
        if not 1 <= requested.number <= MAX_PARTS:
            raise InvalidArgument(
                f"Part number must be an integer between 1 and {MAX_PARTS}, inclusive",
                ArgumentName="partNumber",
            )
        if stored is None or stored.etag != requested.etag.strip('"'):
            raise InvalidPart(UploadId=upload_id, PartNumber=str(requested.number), ETag=requested.etag)
        if (
            requested.checksum is not None
            and stored.checksum is not None
            and requested.checksum != stored.checksum
        ):
            raise InvalidPart(UploadId=upload_id, PartNumber=str(requested.number))
        return stored

    def _upload(self, bucket: str, key: bytes, upload_id: str) -> UploadRow:
        upload = self.store.index.upload(upload_id)
        if upload is None or upload.bucket != bucket or upload.key != key:
            self.store.require_bucket(bucket)
            raise NoSuchUpload(UploadId=upload_id)
        return upload
