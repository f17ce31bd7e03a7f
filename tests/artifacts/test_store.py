"""S3 model data against a real (moto) S3 server: forms, the fetch-once index, and failures."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from coldbrew.artifacts import ArtifactError, ArtifactStore

from .conftest import assert_no_leftovers, reg, tar_gz_bytes

pytestmark = pytest.mark.timeout(30)

ARCHIVE = tar_gz_bytes(reg("model.pkl", b"weights"), reg("code/inference.py", b"x = 1\n"))


def count_get_object(store: ArtifactStore) -> list[str]:
    calls: list[str] = []
    # provide-client-params carries the caller's parameters (Key), before any network I/O.
    store._s3().meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: calls.append(params["Key"])
    )
    return calls


def data_source(uri: str, data_type: str, compression: str) -> dict[str, Any]:
    s3_data_source = {"S3Uri": uri, "S3DataType": data_type, "CompressionType": compression}
    return {"ModelDataSource": {"S3DataSource": s3_data_source}}


def test_model_data_url_and_s3_object_gzip_share_one_copy(store: ArtifactStore, bucket) -> None:
    client, name = bucket
    client.put_object(Bucket=name, Key="m1/model.tar.gz", Body=ARCHIVE)
    path = store.materialize({"ModelDataUrl": f"s3://{name}/m1/model.tar.gz"})
    assert (path / "model.pkl").read_bytes() == b"weights"
    assert (path / "code" / "inference.py").read_text() == "x = 1\n"
    assert store.materialize(data_source(f"s3://{name}/m1/model.tar.gz", "S3Object", "Gzip")) == path
    assert list((store.root / "tmp").iterdir()) == []


def test_s3_object_without_compression_is_not_extracted(store: ArtifactStore, bucket) -> None:
    client, name = bucket
    client.put_object(Bucket=name, Key="m1/model.tar.gz", Body=ARCHIVE)
    path = store.materialize(data_source(f"s3://{name}/m1/model.tar.gz", "S3Object", "None"))
    assert [p.name for p in path.iterdir()] == ["model.tar.gz"]
    assert (path / "model.tar.gz").read_bytes() == ARCHIVE


def test_s3_prefix_downloads_every_object_keeping_paths(store: ArtifactStore, bucket) -> None:
    client, name = bucket
    for key, body in {
        "m1/config.json": b"{}",
        "m1/weights/part-0.bin": b"0",
        "m1/weights/": b"",  # a console "folder" marker
        "m10/other.bin": b"not mine",
    }.items():
        client.put_object(Bucket=name, Key=key, Body=body)
    path = store.materialize(data_source(f"s3://{name}/m1", "S3Prefix", "None"))
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert files == ["config.json", "weights/part-0.bin"]
    # A trailing slash on ModelDataUrl means the same prefix.
    assert store.materialize({"ModelDataUrl": f"s3://{name}/m1/"}) == path


def test_s3_prefix_key_escaping_the_directory_is_refused(store: ArtifactStore, bucket) -> None:
    client, name = bucket
    client.put_object(Bucket=name, Key="m1/ok.bin", Body=b"ok")
    client.put_object(Bucket=name, Key="m1/../evil", Body=b"x")
    with pytest.raises(ArtifactError) as err:
        store.materialize(data_source(f"s3://{name}/m1/", "S3Prefix", "None"))
    assert str(err.value) == (
        f"Model data s3://{name}/m1/ was refused: object key 'm1/../evil' would be placed outside "
        "the model directory."
    )
    assert_no_leftovers(store)


def test_empty_prefix(store: ArtifactStore, bucket) -> None:
    _, name = bucket
    with pytest.raises(ArtifactError) as err:
        store.materialize(data_source(f"s3://{name}/nothing/", "S3Prefix", "None"))
    assert str(err.value) == (
        f"Could not find model data at s3://{name}/nothing/: there are no objects under it."
    )


def test_unchanged_object_is_not_downloaded_again(make_store, bucket) -> None:
    client, name = bucket
    client.put_object(Bucket=name, Key="model.tar.gz", Body=ARCHIVE)
    store = make_store()
    gets = count_get_object(store)
    container = {"ModelDataUrl": f"s3://{name}/model.tar.gz"}
    first = store.materialize(container)
    assert store.materialize(container) == first
    assert make_store().materialize(container) == first  # the index survives a restart
    assert gets == ["model.tar.gz"]
    # A new upload changes the ETag, so it is fetched again.
    client.put_object(Bucket=name, Key="model.tar.gz", Body=tar_gz_bytes(reg("model.pkl", b"v2")))
    second = store.materialize(container)
    assert second != first and (second / "model.pkl").read_bytes() == b"v2"
    assert gets == ["model.tar.gz", "model.tar.gz"]


def test_unchanged_prefix_is_not_downloaded_again(store: ArtifactStore, bucket) -> None:
    client, name = bucket
    client.put_object(Bucket=name, Key="p/a.bin", Body=b"a")
    client.put_object(Bucket=name, Key="p/b.bin", Body=b"b")
    gets = count_get_object(store)
    first = store.materialize({"ModelDataUrl": f"s3://{name}/p/"})
    assert store.materialize({"ModelDataUrl": f"s3://{name}/p/"}) == first
    assert sorted(gets) == ["p/a.bin", "p/b.bin"]
    client.put_object(Bucket=name, Key="p/c.bin", Body=b"c")
    assert (store.materialize({"ModelDataUrl": f"s3://{name}/p/"}) / "c.bin").read_bytes() == b"c"


def test_missing_object(store: ArtifactStore, bucket) -> None:
    _, name = bucket
    with pytest.raises(ArtifactError) as err:
        store.materialize({"ModelDataUrl": f"s3://{name}/missing.tar.gz"})
    assert str(err.value) == (
        f"Could not find model data at s3://{name}/missing.tar.gz: the object does not exist."
    )


@pytest.mark.parametrize(
    "container, url",
    [
        ({"ModelDataUrl": "s3://no-such-bucket-x1/m.tar.gz"}, "s3://no-such-bucket-x1/m.tar.gz"),
        (data_source("s3://no-such-bucket-x1/m", "S3Prefix", "None"), "s3://no-such-bucket-x1/m/"),
    ],
    ids=["object", "prefix"],
)
def test_missing_bucket(store: ArtifactStore, s3_env: str, container: dict, url: str) -> None:
    with pytest.raises(ArtifactError) as err:
        store.materialize(container)
    assert str(err.value) == (
        f"Could not find model data at {url}: the bucket 'no-such-bucket-x1' does not exist."
    )


def test_corrupt_archive_in_s3(store: ArtifactStore, bucket) -> None:
    client, name = bucket
    client.put_object(Bucket=name, Key="model.tar.gz", Body=ARCHIVE[: len(ARCHIVE) // 2])
    with pytest.raises(ArtifactError) as err:
        store.materialize({"ModelDataUrl": f"s3://{name}/model.tar.gz"})
    assert str(err.value) == (
        f"Model archive s3://{name}/model.tar.gz is not a valid gzip-compressed tar file."
    )
    assert_no_leftovers(store)


def test_malicious_archive_in_s3(store: ArtifactStore, bucket) -> None:
    client, name = bucket
    client.put_object(Bucket=name, Key="model.tar.gz", Body=tar_gz_bytes(reg("../evil", b"x")))
    with pytest.raises(ArtifactError, match="was refused: member '../evil' would be extracted outside"):
        store.materialize({"ModelDataUrl": f"s3://{name}/model.tar.gz"})
    assert_no_leftovers(store)


@pytest.mark.parametrize("kind", ["object", "prefix"])
def test_download_over_the_cap(make_store, bucket, kind: str) -> None:
    client, name = bucket
    client.put_object(Bucket=name, Key="big/blob.bin", Body=b"x" * 2048)
    store = make_store(max_bytes=1024)
    uri = f"s3://{name}/big/" + ("blob.bin" if kind == "object" else "")
    with pytest.raises(ArtifactError) as err:
        store.materialize({"ModelDataUrl": uri})
    assert str(err.value) == f"Model data at {uri} is larger than 1.0 KiB (COLDBREW_MAX_ARTIFACT_BYTES)."
    assert_no_leftovers(store)


def test_unreachable_endpoint_fails_fast(store: ArtifactStore, s3_env: str, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
    started = time.monotonic()
    with pytest.raises(ArtifactError) as err:
        store.materialize({"ModelDataUrl": "s3://models/model.tar.gz"})
    assert time.monotonic() - started < 10
    assert str(err.value).startswith(
        "Could not reach S3 at http://127.0.0.1:1 to fetch s3://models/model.tar.gz: "
    )
    assert "\n" not in str(err.value)


def test_no_credentials(store: ArtifactStore, s3_env: str, monkeypatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    expected = r"^Could not fetch s3://models/m\.tar\.gz: no usable AWS credentials"
    with pytest.raises(ArtifactError, match=expected):
        store.materialize({"ModelDataUrl": "s3://models/m.tar.gz"})


def test_generic_endpoint_variable_and_default_region(store: ArtifactStore, bucket, monkeypatch) -> None:
    client, name = bucket
    client.put_object(Bucket=name, Key="model.tar.gz", Body=ARCHIVE)
    monkeypatch.setenv("AWS_ENDPOINT_URL", client.meta.endpoint_url)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert (store.materialize({"ModelDataUrl": f"s3://{name}/model.tar.gz"}) / "model.pkl").exists()
    assert store._s3().meta.region_name == "us-east-1"


def test_tar_members_survive_a_round_trip_through_s3(store: ArtifactStore, bucket) -> None:
    client, name = bucket
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("bin/run.sh")
        info.size, info.mode = 5, 0o755
        tar.addfile(info, io.BytesIO(b"echo\n"))
        link = tarfile.TarInfo("run")
        link.type, link.linkname = tarfile.SYMTYPE, "bin/run.sh"
        tar.addfile(link)
    client.put_object(Bucket=name, Key="model.tar.gz", Body=buf.getvalue())
    path: Path = store.materialize({"ModelDataUrl": f"s3://{name}/model.tar.gz"})
    assert (path / "run").read_bytes() == b"echo\n"  # links inside the model directory are fine
    assert (path / "bin" / "run.sh").stat().st_mode & 0o100
