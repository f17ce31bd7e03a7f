"""Where model data comes from: a ContainerDefinition parsed into a source that can say what it is
(its identity, cheap to get) and fetch itself into a model directory (its content digest)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote

from .errors import ArtifactError
from .extract import CHUNK, Budget, Mode, TreeHash, copy_tree, too_large, unpack_file, write_stream
from .progress import TransferProgress
from .roots import ModelRoots
from .s3 import s3_errors

ACCEPTED = "use s3://bucket/key, file:///absolute/path or an absolute path"


class Source(Protocol):
    label: str

    def identity(self) -> dict[str, Any]:
        """What the data is without reading it (stat, HEAD, listing): equal identity, equal content."""

    def fetch(self, work: Path, max_bytes: int) -> str:
        """Build the model directory at ``work / "model"`` (scratch space ``work`` is ours); return
        the content digest that names it in the cache."""


def source_for(
    container: Mapping[str, Any], s3: Callable[[], Any], roots: ModelRoots | None = None
) -> Source | None:
    """The source a ContainerDefinition points at, or None when it has no model data. Local
    paths must lie under ``roots`` (default: anywhere)."""
    roots = roots if roots is not None else ModelRoots.anywhere()
    url, data_source = container.get("ModelDataUrl"), container.get("ModelDataSource")
    if url and data_source:
        raise ArtifactError("The container sets both ModelDataUrl and ModelDataSource; set only one of them.")
    if data_source:
        s3ds = data_source.get("S3DataSource") if isinstance(data_source, Mapping) else None
        if not isinstance(s3ds, Mapping) or not isinstance(s3ds.get("S3Uri"), str):
            raise ArtifactError("ModelDataSource must contain S3DataSource with an S3Uri.")
        kind = (s3ds.get("S3DataType"), s3ds.get("CompressionType"))
        if kind == ("S3Prefix", "None"):
            return _parse(s3ds["S3Uri"], "auto", s3, roots, prefix=True)
        if kind in {("S3Object", "Gzip"), ("S3Object", "None")}:
            mode: Mode = "archive" if kind[1] == "Gzip" else "file"
            return _parse(s3ds["S3Uri"], mode, s3, roots, prefix=False)
        raise ArtifactError(
            f"ModelDataSource with S3DataType {kind[0]!r} and CompressionType {kind[1]!r} is not supported: "
            "use S3Object with Gzip or None, or S3Prefix with None."
        )
    if url:
        if not isinstance(url, str):
            raise ArtifactError(f"ModelDataUrl must be a string; {ACCEPTED}.")
        return _parse(url, "auto", s3, roots, prefix=None)
    return None


def _parse(url: str, mode: Mode, s3: Callable[[], Any], roots: ModelRoots, prefix: bool | None) -> Source:
    if url.startswith("s3://"):
        # Split by hand: urlsplit would eat '?' and '#', which are legal in keys.
        bucket, _, key = url[len("s3://") :].partition("/")
        if not bucket:
            raise ArtifactError(f"Model data URL {url!r} names no bucket; {ACCEPTED}.")
        if prefix or (prefix is None and (not key or key.endswith("/"))):
            return S3PrefixSource(s3, bucket, key)
        if not key or key.endswith("/"):
            raise ArtifactError(f"Model data {url} names a folder, not an object; use S3DataType S3Prefix.")
        return S3ObjectSource(s3, bucket, key, mode)
    if url.startswith("file://"):
        host, _, path = url[len("file://") :].partition("/")
        if host not in ("", "localhost"):
            raise ArtifactError(f"Model data URL {url!r} is not a local file URL; {ACCEPTED}.")
        return _local(Path(os.path.normpath(unquote("/" + path))), url, mode, roots)
    if url.startswith("/"):
        return _local(Path(os.path.normpath(url)), url, mode, roots)
    raise ArtifactError(f"Model data URL {url!r} is not supported; {ACCEPTED}.")


def _local(path: Path, label: str, mode: Mode, roots: ModelRoots) -> LocalSource:
    # Checked before the path is looked at, so the answer for a path outside the roots is the
    # same whether or not it exists.
    return LocalSource(roots.check(path, label), label, mode, roots)


class LocalSource:
    def __init__(self, path: Path, label: str, mode: Mode, roots: ModelRoots | None = None) -> None:
        self.path, self.label, self.mode = path, label, mode
        self.roots = roots if roots is not None else ModelRoots.anywhere()

    def identity(self) -> dict[str, Any]:
        try:
            st = self.path.stat()
            ident: dict[str, Any] = {"kind": "file", "path": str(self.path), "mode": self.mode}
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                # Reading a pipe or a device would hang or never end.
                raise ArtifactError(f"Model data at {self.label} is not a regular file or a directory.")
            if stat.S_ISDIR(st.st_mode):
                # A directory's own mtime misses edits to files inside it, so list them all.
                ident["tree"] = sorted(
                    [str(Path(d, n).relative_to(self.path)), s.st_size, s.st_mtime_ns]
                    for d, dirs, files in os.walk(self.path)
                    for n in dirs + files
                    for s in [_stat(Path(d, n))]
                )
            else:
                ident.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
            return ident
        except FileNotFoundError as e:
            raise ArtifactError(
                f"Could not find model data at {self.label}: no such file or directory."
            ) from e
        except OSError as e:
            raise ArtifactError(f"Could not read model data at {self.label}: {e.strerror or e}.") from e

    def fetch(self, work: Path, max_bytes: int) -> str:
        if not self.path.is_dir():
            return unpack_file(self.path, self.path.name, work / "model", max_bytes, self.label, self.mode)
        if self.mode == "archive":
            raise ArtifactError(
                f"Model data at {self.label} is a directory, but CompressionType Gzip needs a .tar.gz file."
            )
        return copy_tree(self.path, work / "model", max_bytes, self.label, self.roots.allows)


def _stat(path: Path) -> os.stat_result:
    # Follow links as the copy does, so editing a linked file counts as a change; keep dangling ones.
    try:
        return os.stat(path)
    except OSError:
        return os.lstat(path)


class S3ObjectSource:
    def __init__(self, client: Callable[[], Any], bucket: str, key: str, mode: Mode) -> None:
        self.client, self.bucket, self.key, self.mode = client, bucket, key, mode
        self.label = f"s3://{bucket}/{key}"
        self.size = 0

    def identity(self) -> dict[str, Any]:
        client = self.client()
        with s3_errors(client, self.label, self.bucket):
            head = client.head_object(Bucket=self.bucket, Key=self.key)
        self.size = head["ContentLength"]
        return {
            "kind": "s3", "endpoint": client.meta.endpoint_url, "bucket": self.bucket, "key": self.key,
            "etag": head.get("ETag"), "size": self.size, "mode": self.mode,
        }  # fmt: skip

    def fetch(self, work: Path, max_bytes: int) -> str:
        if self.size > max_bytes:
            raise too_large(self.label, max_bytes)
        client, blob = self.client(), work / "download"
        with s3_errors(client, self.label, self.bucket):
            body = client.get_object(Bucket=self.bucket, Key=self.key)["Body"]
            with body:
                progress = TransferProgress(self.label, self.size)
                raw = write_stream(body.iter_chunks(CHUNK), blob, Budget(max_bytes, self.label), progress)
        name = PurePosixPath(self.key).name
        return unpack_file(blob, name, work / "model", max_bytes, self.label, self.mode, raw_digest=raw)


class S3PrefixSource:
    def __init__(self, client: Callable[[], Any], bucket: str, prefix: str) -> None:
        # Listing "models/m1/" rather than "models/m1" keeps "models/m10/..." out.
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.client, self.bucket = client, bucket
        self.label = f"s3://{bucket}/{self.prefix}"
        self.files: list[tuple[str, str, int]] = []  # (relative path, key, size)

    def identity(self) -> dict[str, Any]:
        client = self.client()
        with s3_errors(client, self.label, self.bucket):
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            listed = [o for page in pages for o in page.get("Contents", [])]
        objects = [(o["Key"], o.get("ETag"), o["Size"]) for o in listed]
        self.files = []
        for key, _, size in objects:
            parts = [p for p in key[len(self.prefix) :].split("/") if p not in ("", ".")]
            if ".." in parts:
                raise ArtifactError(
                    f"Model data {self.label} was refused: object key {key!r} would be placed outside "
                    "the model directory."
                )
            if parts and not key.endswith("/"):  # "folder/" marker objects hold no data
                self.files.append(("/".join(parts), key, size))
        if not self.files:
            raise ArtifactError(f"Could not find model data at {self.label}: there are no objects under it.")
        return {
            "kind": "s3-prefix", "endpoint": client.meta.endpoint_url, "bucket": self.bucket,
            "prefix": self.prefix, "objects": sorted(objects),
        }  # fmt: skip

    def fetch(self, work: Path, max_bytes: int) -> str:
        if sum(size for _, _, size in self.files) > max_bytes:
            raise too_large(self.label, max_bytes)
        client, dest = self.client(), work / "model"
        budget, tree = Budget(max_bytes, self.label), TreeHash()
        progress = TransferProgress(self.label, sum(size for _, _, size in self.files))
        dest.mkdir()
        for rel, key, _ in self.files:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            with s3_errors(client, f"s3://{self.bucket}/{key}", self.bucket):
                body = client.get_object(Bucket=self.bucket, Key=key)["Body"]
                with body:
                    tree.add(rel, write_stream(body.iter_chunks(CHUNK), dest / rel, budget, progress))
        return tree.hexdigest()
