from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from coldbrew.artifacts import ArtifactStore

Member = tuple[tarfile.TarInfo, bytes | None]


def reg(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, linkname: str = "", size: int = 0) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    return info, None


def tar_gz_bytes(*members: Member) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def write_tar_gz(path: Path, *members: Member) -> Path:
    path.write_bytes(tar_gz_bytes(*members))
    return path


def assert_no_leftovers(store: ArtifactStore) -> None:
    assert list((store.root / "sha256").iterdir()) == []
    assert list((store.root / "tmp").iterdir()) == []


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts", max_bytes=10 * 1024 * 1024)


@pytest.fixture
def make_store(tmp_path: Path) -> Callable[..., ArtifactStore]:
    def make(max_bytes: int = 10 * 1024 * 1024, name: str = "artifacts") -> ArtifactStore:
        return ArtifactStore(tmp_path / name, max_bytes=max_bytes)

    return make


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Point the standard AWS settings at moto, and nothing else from the host's AWS config leaks in."""
    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_endpoint


@pytest.fixture
def bucket(s3_env: str) -> tuple[Any, str]:
    """A fresh bucket (the moto server lives for the session) and a client to fill it."""
    client = boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1")
    name = f"models-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return client, name
