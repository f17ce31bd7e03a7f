"""Bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation,
GetBucketVersioning, ListObjects (v1 and v2) and DeleteObjects."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .errors import InvalidArgument, MalformedXML, S3Error
from .http import Context, Request, Responder, in_thread
from .listing import Listing, decode_token, encode_token, start_after
from .names import check_bucket_name, check_key
from .xmlio import child_text, children, document, iso_time, node, owner, parse, text_document, url_encoded

MAX_XML = 2 * 1024 * 1024  # a DeleteObjects of 1,000 keys of 1,024 bytes, escaped, fits


async def list_buckets(ctx: Context, request: Request, response: Responder) -> None:
    prefix = request.query.get("prefix", "")
    limit = _int(request.query.get("max-buckets"), "max-buckets", 10_000, 10_000)
    after = request.query.get("continuation-token", "")
    buckets = [b for b in await in_thread(ctx.store.buckets) if b.name.startswith(prefix) and b.name > after]
    page, more = buckets[:limit], len(buckets) > limit
    entries = [
        node("Bucket", Name=b.name, CreationDate=iso_time(b.created), BucketRegion=b.region) for b in page
    ]
    body = document(
        "ListAllMyBucketsResult",
        [owner(ctx.account_id), node("Buckets", entries)],
        ContinuationToken=page[-1].name if more else None,
        Prefix=prefix or None,
    )
    await response.xml(body)


async def create_bucket(ctx: Context, request: Request, response: Responder) -> None:
    assert request.bucket is not None
    name = check_bucket_name(request.bucket)
    region = request.region or ctx.region
    body = await request.body().read(MAX_XML)
    if body.strip():
        constraint = child_text(parse(body, "CreateBucketConfiguration"), "LocationConstraint")
        region = constraint or region
    await in_thread(ctx.store.create_bucket, name, region)
    await response.send(200, headers=[(b"location", f"/{name}".encode())])


async def head_bucket(ctx: Context, request: Request, response: Responder) -> None:
    assert request.bucket is not None
    bucket = await in_thread(ctx.store.bucket, request.bucket)
    await response.send(200, headers=[(b"x-amz-bucket-region", bucket.region.encode())])


async def delete_bucket(ctx: Context, request: Request, response: Responder) -> None:
    assert request.bucket is not None
    await in_thread(ctx.store.delete_bucket, request.bucket)
    await response.send(204)


async def get_bucket_location(ctx: Context, request: Request, response: Responder) -> None:
    assert request.bucket is not None
    bucket = await in_thread(ctx.store.bucket, request.bucket)
    # us-east-1 is the empty constraint, as S3 has always answered.
    await response.xml(
        text_document("LocationConstraint", "" if bucket.region == "us-east-1" else bucket.region)
    )


async def get_bucket_versioning(ctx: Context, request: Request, response: Responder) -> None:
    assert request.bucket is not None
    await in_thread(ctx.store.bucket, request.bucket)
    await response.xml(document("VersioningConfiguration"))


async def list_objects(ctx: Context, request: Request, response: Responder) -> None:
    assert request.bucket is not None
    query = request.query
    v2 = query.get("list-type") == "2"
    if "list-type" in query and not v2:
        raise InvalidArgument("Invalid List Type specified", ArgumentName="list-type")
    encoding = query.get("encoding-type")
    if encoding not in (None, "url"):
        raise InvalidArgument("Invalid Encoding Method specified in Request", ArgumentName="encoding-type")
    encode = encoding == "url"
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    prefix_b, delimiter_b = check_key(prefix) if prefix else b"", delimiter.encode()
    max_keys = _int(query.get("max-keys"), "max-keys", 1000, 1000)
    token = query.get("continuation-token") if v2 else None
    marker = query.get("start-after" if v2 else "marker", "")
    if token is not None:
        start = decode_token(token)
    else:
        start = start_after(check_key(marker), prefix_b, delimiter_b) if marker else b""
    listing = await in_thread(ctx.store.list, request.bucket, prefix_b, delimiter_b, start, max_keys)
    entries = _entries(ctx, listing, encode, with_owner=not v2 or query.get("fetch-owner") == "true")
    text: dict[str, str | int | bool | None] = {
        "Name": request.bucket,
        "Prefix": url_encoded(prefix, encode),
        "Delimiter": url_encoded(delimiter, encode) if delimiter else None,
        "MaxKeys": max_keys,
        "EncodingType": encoding,
        "IsTruncated": listing.truncated,
    }
    if v2:
        next_token = (
            encode_token(listing.next_start) if listing.truncated and listing.next_start is not None else None
        )
        text.update(
            KeyCount=len(listing.objects) + len(listing.prefixes),
            ContinuationToken=token,
            NextContinuationToken=next_token,
            StartAfter=url_encoded(marker, encode) if "start-after" in query else None,
        )
    else:
        last = listing.last
        text.update(
            Marker=url_encoded(marker, encode),
            # S3 gives NextMarker only with a delimiter; clients use the last key otherwise.
            NextMarker=url_encoded(last.decode(), encode)
            if listing.truncated and delimiter and last
            else None,
        )
    await response.xml(document("ListBucketResult", entries, **text))


def _entries(ctx: Context, listing: Listing, encode: bool, with_owner: bool) -> list[ET.Element]:
    result = []
    for row in listing.objects:
        entry = node(
            "Contents",
            Key=url_encoded(row.key.decode(), encode),
            LastModified=iso_time(row.modified),
            ETag=f'"{row.etag}"',
            ChecksumAlgorithm=row.meta.checksum.algorithm if row.meta.checksum else None,
            ChecksumType=row.meta.checksum.type if row.meta.checksum else None,
            Size=row.size,
            StorageClass="STANDARD",
        )
        if with_owner:
            entry.append(owner(ctx.account_id))
        result.append(entry)
    result += [node("CommonPrefixes", Prefix=url_encoded(p.decode(), encode)) for p in listing.prefixes]
    return result


async def delete_objects(ctx: Context, request: Request, response: Responder) -> None:
    assert request.bucket is not None
    root = parse(await request.body().read(MAX_XML), "Delete")
    quiet = (child_text(root, "Quiet") or "").strip().lower() == "true"
    keys = [child_text(o, "Key") for o in children(root, "Object")]
    if not keys or len(keys) > 1000 or any(k is None for k in keys):
        raise MalformedXML()
    results, valid = [], []
    for key in keys:
        assert key is not None
        try:
            valid.append((key, check_key(key)))
        except S3Error as e:  # a bad key is that key's error, not the request's
            results.append(node("Error", Key=key, Code=e.code, Message=e.message))
    await in_thread(ctx.store.delete, request.bucket, [encoded for _, encoded in valid])
    if not quiet:
        results += [node("Deleted", Key=key) for key, _ in valid]
    await response.xml(document("DeleteResult", results))


def _int(value: str | None, name: str, default: int, cap: int) -> int:
    if value is None:
        return default
    if not value.strip().isdigit():
        raise InvalidArgument(
            f"Provided {name} not an integer or within integer range",
            ArgumentName=name,
            ArgumentValue=value[:64],
        )
    return min(int(value), cap)
