"""Object operations: PutObject, GetObject, HeadObject, DeleteObject, CopyObject."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from typing import BinaryIO
from urllib.parse import unquote

from .blobs import BlobWriter
from .checksums import Digests
from .errors import InvalidArgument, NotImplementedError_
from .http import Context, Headers, Request, Responder, in_thread
from .index import ObjectMeta, ObjectRow
from .metadata import (
    apply_overrides,
    byte_range,
    check_conditions,
    meta_from_headers,
    object_headers,
    requested_checksum,
)
from .names import check_bucket_name, check_key
from .xmlio import document, iso_time

MAX_OBJECT_SIZE = 5 * 1024**3  # S3's limit for one PUT (and for one part)
READ_BLOCK = 1024 * 1024


def bucket_and_key(request: Request) -> tuple[str, bytes]:
    assert request.bucket is not None and request.key is not None
    return request.bucket, check_key(request.key)


async def receive_into(request: Request, writer: BlobWriter, trailer: str | None) -> str | None:
    """Stream the request body into ``writer``; the checksum the client sent in a trailer, if any.

    One block is written (in a thread) while the next is received, so the socket, the disk and
    the hashing all move at once instead of in turn."""
    writing: asyncio.Future[None] | None = None
    try:
        body = request.body()
        async for block in body.blocks(MAX_OBJECT_SIZE):
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(in_thread(writer.write, block))
        if writing is not None:
            await writing
    except BaseException:
        if writing is not None:
            await asyncio.gather(writing, return_exceptions=True)  # never discard under a running write
        await in_thread(writer.discard)
        raise
    return body.trailers.get(trailer) if trailer else None


def checksum_headers(row: ObjectRow) -> Headers:
    checksum = row.meta.checksum
    if checksum is None:
        return []
    return [
        (checksum.header.encode(), checksum.value.encode()),
        (b"x-amz-checksum-type", checksum.type.encode()),
    ]


async def put_object(ctx: Context, request: Request, response: Responder) -> None:
    bucket, key = bucket_and_key(request)
    if "x-amz-copy-source" in request.headers:
        await copy_object(ctx, request, response)
        return
    await in_thread(ctx.store.bucket, bucket)  # before reading a body that has nowhere to go
    meta = meta_from_headers(request.headers)
    algorithm, value, trailer = requested_checksum(request.headers)
    writer = await in_thread(ctx.store.writer, Digests(algorithm, request.header("content-md5")))
    value = await receive_into(request, writer, trailer) or value
    if_none_match = request.header("if-none-match") == "*"
    row = await in_thread(ctx.store.put, bucket, key, writer, meta, value, if_none_match)
    await response.send(200, headers=[(b"etag", f'"{row.etag}"'.encode()), *checksum_headers(row)])


async def get_object(ctx: Context, request: Request, response: Responder) -> None:
    bucket, key = bucket_and_key(request)
    if request.method == "HEAD":
        row = await in_thread(ctx.store.head, bucket, key)
        await _answer(request, response, row, None)
        return
    row, content = await in_thread(ctx.store.open, bucket, key)
    try:
        await _answer(request, response, row, content)
    finally:
        await in_thread(content.close)


async def _answer(request: Request, response: Responder, row: ObjectRow, content: BinaryIO | None) -> None:
    check_conditions(request.headers, row)
    part = request.query.get("partNumber")
    if part is not None and not (part == "1" and row.meta.parts == 0):
        raise NotImplementedError_(
            "GetObject with partNumber is supported only for partNumber=1 of a single-part object."
        )
    span = byte_range(request.header("range"), row.size)
    # A checksum covers the whole object, so a range answers without one (as S3 does).
    checksum_mode = request.header("x-amz-checksum-mode") == "ENABLED" and span is None
    headers = apply_overrides(object_headers(row, checksum_mode), request.query)
    status, start, length = 200, 0, row.size
    if span is not None:
        status, start, length = 206, span[0], span[1] - span[0] + 1
        headers.append((b"content-range", f"bytes {span[0]}-{span[1]}/{row.size}".encode()))
    if content is None:
        await response.send(status, headers=headers, length=length)
        return
    await response.stream(status, headers, length, _blocks(content, start, length))


async def _blocks(content: BinaryIO, start: int, length: int) -> AsyncIterator[bytes]:
    """The content from ``start``, the next block read (in a thread) while this one is sent."""

    def read(offset: int, size: int) -> bytes:
        if isinstance(content, io.BytesIO):  # an object kept in the index
            return content.getbuffer()[offset : offset + size].tobytes()
        return os.pread(content.fileno(), size, offset)

    offset, end = start, start + length
    reading = (
        asyncio.ensure_future(in_thread(read, offset, min(READ_BLOCK, end - offset))) if length else None
    )
    try:
        while reading is not None:
            data = await reading
            if not data:
                raise OSError(f"content file ended {end - offset} bytes early")
            offset += len(data)
            reading = (
                asyncio.ensure_future(in_thread(read, offset, min(READ_BLOCK, end - offset)))
                if offset < end
                else None
            )
            yield data
    finally:
        if reading is not None:
            await asyncio.gather(reading, return_exceptions=True)  # before the file is closed


async def delete_object(ctx: Context, request: Request, response: Responder) -> None:
    bucket, key = bucket_and_key(request)
    await in_thread(ctx.store.delete, bucket, [key])
    await response.send(204)


async def copy_object(ctx: Context, request: Request, response: Responder) -> None:
    bucket, key = bucket_and_key(request)
    source = copy_source(request)
    directive = request.header("x-amz-metadata-directive") or "COPY"
    if directive not in ("COPY", "REPLACE"):
        raise InvalidArgument("Unknown metadata directive.", ArgumentName="x-amz-metadata-directive")
    meta: ObjectMeta | None = meta_from_headers(request.headers) if directive == "REPLACE" else None
    row = await in_thread(ctx.store.copy, source, bucket, key, meta)
    children = document("CopyObjectResult", LastModified=iso_time(row.modified), ETag=f'"{row.etag}"')
    await response.xml(children)


def copy_source(request: Request) -> tuple[str, bytes]:
    """The (bucket, key) of x-amz-copy-source: ``bucket/key`` or ``/bucket/key``, URL-encoded."""
    raw = request.headers["x-amz-copy-source"]
    path, _, query = raw.partition("?")
    if query and not query.startswith("versionId=null"):
        raise NotImplementedError_(
            "Copying a particular version is not supported: the store keeps one version."
        )
    bucket, slash, key = unquote(path).lstrip("/").partition("/")
    if not slash or not key:
        raise InvalidArgument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            ArgumentName="x-amz-copy-source",
        )
    check_bucket_name(bucket)
    return bucket, check_key(key)
