"""Multipart upload operations: Create, UploadPart (and UploadPartCopy), Complete, Abort, ListParts
and ListMultipartUploads."""

from __future__ import annotations

import re

from .checksums import ALGORITHMS, Digests
from .errors import InvalidArgument, MalformedXML
from .http import Context, Request, Responder, in_thread
from .metadata import meta_from_headers, requested_checksum
from .multipart import MAX_PARTS, RequestedPart
from .names import check_key
from .object_api import bucket_and_key, checksum_headers, copy_source, receive_into
from .xmlio import child_text, children, document, iso_time, node, owner, parse, url_encoded

MAX_XML = 2 * 1024 * 1024  # 10,000 parts with their checksums
_COPY_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


async def create(ctx: Context, request: Request, response: Responder) -> None:
    bucket, key = bucket_and_key(request)
    meta = meta_from_headers(request.headers)
    upload = await in_thread(ctx.uploads.create, bucket, key, meta)
    headers = []
    if meta.checksum_algorithm:
        headers.append((b"x-amz-checksum-algorithm", meta.checksum_algorithm.encode()))
        headers.append((b"x-amz-checksum-type", (meta.checksum_type or "COMPOSITE").encode()))
    body = document("InitiateMultipartUploadResult", Bucket=bucket, Key=request.key, UploadId=upload.id)
    await response.xml(body, headers=headers)


async def upload_part(ctx: Context, request: Request, response: Responder) -> None:
    bucket, key = bucket_and_key(request)
    upload_id, number = request.query["uploadId"], _part_number(request.query.get("partNumber"))
    upload = await in_thread(ctx.uploads.get, bucket, key, upload_id)
    if "x-amz-copy-source" in request.headers:
        source = copy_source(request)
        span = _copy_range(request.header("x-amz-copy-source-range"))
        part = await in_thread(ctx.uploads.copy_part, bucket, key, upload_id, number, source, span)
        body = document("CopyPartResult", LastModified=iso_time(part.modified), ETag=f'"{part.etag}"')
        await response.xml(body)
        return
    algorithm, value, trailer = requested_checksum(request.headers, upload.meta.checksum_algorithm)
    writer = await in_thread(ctx.store.writer, Digests(algorithm, request.header("content-md5")))
    value = await receive_into(request, writer, trailer) or value
    part = await in_thread(ctx.uploads.put_part, bucket, key, upload_id, number, writer, value)
    headers = [(b"etag", f'"{part.etag}"'.encode())]
    if part.checksum and algorithm:
        headers.append((f"x-amz-checksum-{algorithm.lower()}".encode(), part.checksum.encode()))
    await response.send(200, headers=headers)


async def complete(ctx: Context, request: Request, response: Responder) -> None:
    bucket, key = bucket_and_key(request)
    root = parse(await request.body().read(MAX_XML), "CompleteMultipartUpload")
    requested = []
    for part in children(root, "Part"):
        number, etag = child_text(part, "PartNumber"), child_text(part, "ETag")
        if number is None or etag is None or not number.strip().isdigit():
            raise MalformedXML()
        checksum = next(
            (child_text(part, f"Checksum{a}") for a in ALGORITHMS if child_text(part, f"Checksum{a}")), None
        )
        requested.append(RequestedPart(int(number), etag.strip().strip('"'), checksum))
    if_none_match = request.header("if-none-match") == "*"
    row = await in_thread(
        ctx.uploads.complete, bucket, key, request.query["uploadId"], requested, if_none_match
    )
    kept = row.meta.checksum
    text: dict[str, str | None] = {
        "Location": f"/{bucket}/{request.key}",
        "Bucket": bucket,
        "Key": request.key,
        "ETag": f'"{row.etag}"',
    }
    if kept is not None:
        text[f"Checksum{kept.algorithm}"] = kept.value
        text["ChecksumType"] = kept.type
    await response.xml(document("CompleteMultipartUploadResult", **text), headers=checksum_headers(row))


async def abort(ctx: Context, request: Request, response: Responder) -> None:
    bucket, key = bucket_and_key(request)
    await in_thread(ctx.uploads.abort, bucket, key, request.query["uploadId"])
    await response.send(204)


async def list_parts(ctx: Context, request: Request, response: Responder) -> None:
    bucket, key = bucket_and_key(request)
    upload_id = request.query["uploadId"]
    marker = _int(request.query.get("part-number-marker"), "part-number-marker", 0)
    limit = min(_int(request.query.get("max-parts"), "max-parts", 1000), 1000)
    upload, parts = await in_thread(ctx.uploads.parts, bucket, key, upload_id, marker, limit + 1)
    page, truncated = parts[:limit], len(parts) > limit
    algorithm = upload.meta.checksum_algorithm
    entries = [
        node(
            "Part",
            PartNumber=p.number,
            LastModified=iso_time(p.modified),
            ETag=f'"{p.etag}"',
            Size=p.size,
            **({f"Checksum{algorithm}": p.checksum} if algorithm and p.checksum else {}),
        )
        for p in page
    ]
    body = document(
        "ListPartsResult",
        [node("Initiator", ID=ctx.account_id, DisplayName="coldbrew"), owner(ctx.account_id), *entries],
        Bucket=bucket,
        Key=request.key,
        UploadId=upload_id,
        PartNumberMarker=marker,
        NextPartNumberMarker=page[-1].number if truncated and page else None,
        MaxParts=limit,
        IsTruncated=truncated,
        StorageClass="STANDARD",
        ChecksumAlgorithm=algorithm,
        ChecksumType=upload.meta.checksum_type if algorithm else None,
    )
    await response.xml(body)


async def list_uploads(ctx: Context, request: Request, response: Responder) -> None:
    assert request.bucket is not None
    query = request.query
    prefix = query.get("prefix", "")
    key_marker, id_marker = query.get("key-marker", ""), query.get("upload-id-marker", "")
    limit = min(_int(query.get("max-uploads"), "max-uploads", 1000), 1000)
    encode = query.get("encoding-type") == "url"
    start = check_key(key_marker) if key_marker else check_key(prefix) if prefix else b""
    rows = await in_thread(ctx.uploads.uploads, request.bucket, start, 100_000)
    prefix_b, marker_b = prefix.encode(), key_marker.encode()
    candidates = []
    passed_id = not id_marker
    for upload in rows:
        if not upload.key.startswith(prefix_b):
            continue
        if key_marker and upload.key == marker_b:
            if not passed_id:
                passed_id = upload.id == id_marker
                continue
            if not id_marker:
                continue
        candidates.append(upload)
    page, truncated = candidates[:limit], len(candidates) > limit
    entries = [
        node(
            "Upload",
            [node("Initiator", ID=ctx.account_id, DisplayName="coldbrew"), owner(ctx.account_id)],
            Key=url_encoded(u.key.decode(), encode),
            UploadId=u.id,
            StorageClass="STANDARD",
            Initiated=iso_time(u.initiated),
        )
        for u in page
    ]
    body = document(
        "ListMultipartUploadsResult",
        entries,
        Bucket=request.bucket,
        KeyMarker=url_encoded(key_marker, encode),
        UploadIdMarker=id_marker,
        NextKeyMarker=url_encoded(page[-1].key.decode(), encode) if truncated else None,
        NextUploadIdMarker=page[-1].id if truncated else None,
        Prefix=url_encoded(prefix, encode) if prefix else None,
        MaxUploads=limit,
        IsTruncated=truncated,
        EncodingType="url" if encode else None,
    )
    await response.xml(body)


def _part_number(value: str | None) -> int:
    if value is None or not value.isdigit() or not 1 <= int(value) <= MAX_PARTS:
        raise InvalidArgument(
            f"Part number must be an integer between 1 and {MAX_PARTS}, inclusive",
            ArgumentName="partNumber",
            ArgumentValue=(value or "")[:32],
        )
    return int(value)


def _copy_range(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    match = _COPY_RANGE.fullmatch(value.strip())
    if not match or int(match[2]) < int(match[1]):
        raise InvalidArgument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last "
            "are the zero-based offsets of the first and last bytes to copy",
            ArgumentName="x-amz-copy-source-range",
        )
    return int(match[1]), int(match[2]) - int(match[1]) + 1


def _int(value: str | None, name: str, default: int) -> int:
    if value is None:
        return default
    if not value.strip().isdigit():
        raise InvalidArgument(f"Provided {name} not an integer or within integer range", ArgumentName=name)
    return int(value)
