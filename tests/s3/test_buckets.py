"""Buckets and listings through boto3: create/head/list/delete, ListObjects v1 and v2 with
prefixes, delimiters and pages, DeleteObjects, and S3's errors for each."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.s3.conftest import error_code, status_of


def test_bucket_lifecycle(s3: Any) -> None:
    name = f"life-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    assert (
        s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "us-east-1"
    )
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as again:
        s3.create_bucket(Bucket=name)
    assert error_code(again) == "BucketAlreadyOwnedByYou" and status_of(again) == 409
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    with pytest.raises(ClientError) as not_empty:
        s3.delete_bucket(Bucket=name)
    assert error_code(not_empty) == "BucketNotEmpty" and status_of(not_empty) == 409
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as gone:
        s3.head_bucket(Bucket=name)
    # HEAD has no body: botocore says "404" with the HTTP reason, which the SageMaker SDK checks for.
    assert gone.value.response["Error"] == {"Code": "404", "Message": "Not Found"}
    for call in (
        lambda: s3.list_objects_v2(Bucket=name),
        lambda: s3.put_object(Bucket=name, Key="k", Body=b""),
    ):
        with pytest.raises(ClientError) as missing:
            call()
        assert error_code(missing) == "NoSuchBucket" and status_of(missing) == 404
        assert missing.value.response["Error"]["BucketName"] == name


def test_location_constraint_and_region(s3: Any) -> None:
    name = f"eu-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-west-1"
    listed = {b["Name"]: b for b in s3.list_buckets()["Buckets"]}
    assert listed[name]["BucketRegion"] == "eu-west-1"
    plain = f"us-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=plain)
    assert s3.get_bucket_location(Bucket=plain)["LocationConstraint"] is None  # us-east-1, as S3 says it


@pytest.mark.parametrize("name", ["ab", "UPPER", "has_underscore", "-dash", "a" * 64, "1.2.3.4", "a..b"])
def test_invalid_bucket_names(s3: Any, name: str) -> None:
    with pytest.raises(ClientError) as invalid:
        s3.create_bucket(Bucket=name)
    assert error_code(invalid) == "InvalidBucketName" and status_of(invalid) == 400


def test_list_buckets_pages(s3: Any) -> None:
    prefix = f"page-{uuid.uuid4().hex[:6]}"
    for i in range(3):
        s3.create_bucket(Bucket=f"{prefix}-{i}")
    first = s3.list_buckets(Prefix=prefix, MaxBuckets=2)
    assert [b["Name"] for b in first["Buckets"]] == [f"{prefix}-0", f"{prefix}-1"]
    rest = s3.list_buckets(Prefix=prefix, MaxBuckets=2, ContinuationToken=first["ContinuationToken"])
    assert [b["Name"] for b in rest["Buckets"]] == [f"{prefix}-2"] and "ContinuationToken" not in rest


@pytest.fixture
def tree(s3: Any, bucket: str) -> str:
    for key in ["a.txt", "b/1.txt", "b/2.txt", "b/c/3.txt", "d/4.txt", "e.txt", "b/c/4.txt"]:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    return bucket


def test_list_v2_prefix_and_delimiter(s3: Any, tree: str) -> None:
    top = s3.list_objects_v2(Bucket=tree, Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["a.txt", "e.txt"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["b/", "d/"]
    assert top["KeyCount"] == 4 and top["IsTruncated"] is False
    under_b = s3.list_objects_v2(Bucket=tree, Prefix="b/", Delimiter="/")
    assert [o["Key"] for o in under_b["Contents"]] == ["b/1.txt", "b/2.txt"]
    assert [p["Prefix"] for p in under_b["CommonPrefixes"]] == ["b/c/"]
    flat = s3.list_objects_v2(Bucket=tree, Prefix="b/")
    assert [o["Key"] for o in flat["Contents"]] == ["b/1.txt", "b/2.txt", "b/c/3.txt", "b/c/4.txt"]
    entry = flat["Contents"][0]
    assert entry["Size"] == 7 and entry["ETag"].startswith('"') and entry["StorageClass"] == "STANDARD"
    assert s3.list_objects_v2(Bucket=tree, Prefix="zzz")["KeyCount"] == 0


def test_list_v2_pages_with_continuation_tokens(s3: Any, tree: str) -> None:
    seen, token, pages = [], None, 0
    while True:
        kwargs: dict[str, Any] = {"Bucket": tree, "MaxKeys": 2, "Delimiter": "/"}
        if token:
            kwargs["ContinuationToken"] = token
        page = s3.list_objects_v2(**kwargs)
        pages += 1
        seen += [o["Key"] for o in page.get("Contents", [])] + [
            p["Prefix"] for p in page.get("CommonPrefixes", [])
        ]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert sorted(seen) == ["a.txt", "b/", "d/", "e.txt"] and pages == 2
    paginated = s3.get_paginator("list_objects_v2").paginate(Bucket=tree, PaginationConfig={"PageSize": 3})
    assert len([o for p in paginated for o in p["Contents"]]) == 7
    after = s3.list_objects_v2(Bucket=tree, StartAfter="b/c/3.txt")
    assert [o["Key"] for o in after["Contents"]] == ["b/c/4.txt", "d/4.txt", "e.txt"]
    with pytest.raises(ClientError) as bad_token:
        s3.list_objects_v2(Bucket=tree, ContinuationToken="not-a-token")
    assert error_code(bad_token) == "InvalidArgument"


def test_list_v1_markers(s3: Any, tree: str) -> None:
    paginated = s3.get_paginator("list_objects").paginate(Bucket=tree, PaginationConfig={"PageSize": 2})
    assert len([o for p in paginated for o in p["Contents"]]) == 7
    first = s3.list_objects(Bucket=tree, Delimiter="/", MaxKeys=3)
    assert first["IsTruncated"] and first["NextMarker"] == "d/"
    rest = s3.list_objects(Bucket=tree, Delimiter="/", Marker=first["NextMarker"])
    assert [o["Key"] for o in rest["Contents"]] == ["e.txt"] and "CommonPrefixes" not in rest
    assert first["Contents"][0]["Owner"]["ID"] == "123456789012"


def test_url_encoded_listing(s3: Any, bucket: str) -> None:
    keys = ["sp ace/x", "plus+/y", "pct%/z", "ünï/w"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    # botocore asks for encoding-type=url and decodes; the AWS CLI does the same.
    listed = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert sorted(p["Prefix"] for p in listed["CommonPrefixes"]) == sorted(
        k.split("/")[0] + "/" for k in keys
    )
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == sorted(keys)


def test_bad_max_keys(s3: Any, tree: str) -> None:
    with pytest.raises(ClientError) as bad:
        s3.list_objects_v2(Bucket=tree, MaxKeys=-1)
    assert error_code(bad) == "InvalidArgument"


def test_delete_objects(s3: Any, tree: str) -> None:
    objects = [{"Key": "a.txt"}, {"Key": "b/1.txt"}, {"Key": "nope"}, {"Key": "x" * 1025}]
    deleted = s3.delete_objects(Bucket=tree, Delete={"Objects": objects})
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["a.txt", "b/1.txt", "nope"]
    assert [e["Code"] for e in deleted["Errors"]] == ["KeyTooLongError"]  # that key's, not the request's
    quiet = s3.delete_objects(Bucket=tree, Delete={"Objects": [{"Key": "e.txt"}], "Quiet": True})
    assert "Deleted" not in quiet
    remaining = [o["Key"] for o in s3.list_objects_v2(Bucket=tree)["Contents"]]
    assert remaining == ["b/2.txt", "b/c/3.txt", "b/c/4.txt", "d/4.txt"]
