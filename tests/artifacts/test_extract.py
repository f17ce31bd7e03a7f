"""Local model data (file://, plain paths, directories) and safe extraction, through the public API."""

from __future__ import annotations

import gzip
import os
import re
import tarfile
import threading
from pathlib import Path

import pytest

from coldbrew.artifacts import ArtifactError, ArtifactStore, extract

from .conftest import assert_no_leftovers, reg, special, tar_gz_bytes, write_tar_gz

pytestmark = pytest.mark.timeout(30)
INSIDE = " the model directory"
GZIP = {"CompressionType": "Gzip"}
CAP = "(COLDBREW_MAX_ARTIFACT_BYTES)"


def url(path: Path) -> str:
    return f"file://{path}"


def test_tar_gz_by_file_url_and_plain_path(store: ArtifactStore, tmp_path: Path) -> None:
    archive = write_tar_gz(
        tmp_path / "model.tar.gz",
        reg("model.pkl", b"weights"),
        reg("code/inference.py", b"def model_fn(d): ..."),
    )
    path = store.materialize({"ModelDataUrl": url(archive)})
    assert path.parent == store.root / "sha256"
    assert (path / "model.pkl").read_bytes() == b"weights"
    assert (path / "code" / "inference.py").read_bytes().startswith(b"def model_fn")
    assert store.materialize({"ModelDataUrl": str(archive)}) == path
    assert list((store.root / "tmp").iterdir()) == []


def test_gzip_tar_is_detected_by_content_not_name(store: ArtifactStore, tmp_path: Path) -> None:
    blob = write_tar_gz(tmp_path / "weights.bin", reg("a.txt", b"a"))
    assert (store.materialize({"ModelDataUrl": url(blob)}) / "a.txt").read_bytes() == b"a"


def test_directory_is_copied(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "model"
    (src / "code").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "model.pkl").write_bytes(b"w")
    (src / "code" / "inference.py").write_text("x = 1\n")
    path = store.materialize({"ModelDataUrl": url(src)})
    assert (path / "model.pkl").read_bytes() == b"w"
    assert (path / "code" / "inference.py").read_text() == "x = 1\n"
    assert (path / "empty").is_dir()


def test_single_uncompressed_file_is_copied_under_its_name(store: ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    path = store.materialize({"ModelDataUrl": str(tmp_path / "model.onnx")})
    assert [p.name for p in path.iterdir()] == ["model.onnx"]
    # Same bytes under another name is another model directory.
    (tmp_path / "other.onnx").write_bytes(b"onnx")
    assert store.materialize({"ModelDataUrl": str(tmp_path / "other.onnx")}) != path


def test_no_model_data_gives_an_empty_directory(store: ArtifactStore) -> None:
    path = store.materialize({"Image": "coldbrew/sklearn"})
    assert path.is_dir() and list(path.iterdir()) == []


def test_absolute_member_paths_are_refused(store: ArtifactStore, tmp_path: Path) -> None:
    archive = write_tar_gz(tmp_path / "m.tar.gz", reg(str(tmp_path / "abs.txt"), b"x"))
    with pytest.raises(ArtifactError) as err:
        store.materialize({"ModelDataUrl": url(archive)})
    assert f"member '{tmp_path / 'abs.txt'}' has an absolute path" in str(err.value)
    assert not (tmp_path / "abs.txt").exists()


@pytest.mark.parametrize(
    "member, reason",
    [
        (reg("../evil", b"x"), "member '../evil' would be extracted outside the model directory"),
        (reg("a/../../evil", b"x"), "member 'a/../../evil' would be extracted outside the model directory"),
        (special("link", tarfile.SYMTYPE, "../evil"), "member 'link' is a link that points outside" + INSIDE),
        (special("link", tarfile.SYMTYPE, "/etc/passwd"), "member 'link' is a link to an absolute path"),
        (special("hard", tarfile.LNKTYPE, "../evil"), "member 'hard' is a link that points outside" + INSIDE),
        (special("tty", tarfile.CHRTYPE), "member 'tty' is a device, pipe or other special file"),
        (special("fifo", tarfile.FIFOTYPE), "member 'fifo' is a device, pipe or other special file"),
    ],
    ids=["dotdot", "nested-dotdot", "symlink-out", "symlink-abs", "hardlink-out", "chardev", "fifo"],
)
def test_malicious_members_are_refused(
    store: ArtifactStore, tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None], reason: str
) -> None:
    (tmp_path / "evil").write_bytes(b"secret")
    archive = write_tar_gz(tmp_path / "m.tar.gz", reg("ok.txt", b"fine"), member)
    with pytest.raises(ArtifactError) as err:
        store.materialize({"ModelDataUrl": url(archive)})
    assert str(err.value) == f"Model archive {url(archive)} was refused: {reason}."
    assert (tmp_path / "evil").read_bytes() == b"secret"
    assert_no_leftovers(store)


def test_member_declaring_a_huge_size_is_refused_before_extraction(make_store, tmp_path: Path) -> None:
    store = make_store(max_bytes=1024)
    archive = write_tar_gz(tmp_path / "m.tar.gz", special("huge", tarfile.REGTYPE, size=10**12))
    with pytest.raises(ArtifactError) as err:
        store.materialize({"ModelDataUrl": str(archive)})
    assert str(err.value) == (f"Model archive {archive} expands to more than 1.0 KiB {CAP}.")
    assert_no_leftovers(store)


def test_total_over_the_cap_is_refused(make_store, tmp_path: Path) -> None:
    store = make_store(max_bytes=1000)
    archive = write_tar_gz(tmp_path / "m.tar.gz", *(reg(f"f{i}", b"x" * 300) for i in range(4)))
    with pytest.raises(ArtifactError, match=re.escape(f"expands to more than 1000 bytes {CAP}")):
        store.materialize({"ModelDataUrl": str(archive)})
    assert_no_leftovers(store)


def test_too_many_members_are_refused(store: ArtifactStore, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(extract, "MAX_MEMBERS", 3)
    archive = write_tar_gz(tmp_path / "m.tar.gz", *(reg(f"f{i}", b"") for i in range(5)))
    with pytest.raises(ArtifactError, match="has more than 3 members"):
        store.materialize({"ModelDataUrl": str(archive)})
    assert_no_leftovers(store)


@pytest.mark.parametrize("kind", ["uncompressed-over-cap", "directory-over-cap"])
def test_uncompressed_data_is_capped(make_store, tmp_path: Path, kind: str) -> None:
    store = make_store(max_bytes=1000)
    src = tmp_path / "model"
    src.mkdir()
    for i in range(3):
        (src / f"part{i}.bin").write_bytes(b"x" * 400)
    target = src / "part0.bin" if kind.startswith("uncompressed") else src
    if kind.startswith("uncompressed"):
        target.write_bytes(b"x" * 1001)
    with pytest.raises(ArtifactError) as err:
        store.materialize({"ModelDataUrl": str(target)})
    assert str(err.value) == f"Model data at {target} is larger than 1000 bytes {CAP}."
    assert_no_leftovers(store)


@pytest.mark.parametrize("kind", ["garbage-after-magic", "truncated", "gzip-of-text", "text-named-tar-gz"])
def test_corrupt_archives_are_refused(store: ArtifactStore, tmp_path: Path, kind: str) -> None:
    good = tar_gz_bytes(*(reg(f"f{i}", os.urandom(20_000)) for i in range(5)))
    data = {
        "garbage-after-magic": b"\x1f\x8b" + os.urandom(4000),
        "truncated": good[: len(good) // 2],
        "gzip-of-text": gzip.compress(b"just some text, not a tar\n" * 100),
        "text-named-tar-gz": b"not an archive at all",
    }[kind]
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(data)
    with pytest.raises(ArtifactError) as err:
        store.materialize({"ModelDataUrl": url(archive)})
    assert str(err.value) == f"Model archive {url(archive)} is not a valid gzip-compressed tar file."
    assert_no_leftovers(store)


def test_missing_file(store: ArtifactStore, tmp_path: Path) -> None:
    missing = url(tmp_path / "nope.tar.gz")
    with pytest.raises(ArtifactError) as err:
        store.materialize({"ModelDataUrl": missing})
    assert str(err.value) == f"Could not find model data at {missing}: no such file or directory."


@pytest.mark.parametrize(
    "bad", ["model.tar.gz", "./m/model.tar.gz", "https://example.com/m.tar.gz", "file://host/m"]
)
def test_unsupported_urls_name_the_accepted_forms(store: ArtifactStore, bad: str) -> None:
    with pytest.raises(ArtifactError) as err:
        store.materialize({"ModelDataUrl": bad})
    assert repr(bad) in str(err.value)
    assert "use s3://bucket/key, file:///absolute/path or an absolute path" in str(err.value)


def test_unchanged_source_is_served_from_the_index(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(b"old!")
    first = store.materialize({"ModelDataUrl": str(src)})
    # Swap the content but keep size and mtime: only a store that re-reads the file could notice.
    stat = src.stat()
    src.write_bytes(b"new!")
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert store.materialize({"ModelDataUrl": str(src)}) == first
    assert (first / "model.bin").read_bytes() == b"old!"
    # A changed identity is fetched again, into a new content-addressed directory.
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = store.materialize({"ModelDataUrl": str(src)})
    assert second != first and (second / "model.bin").read_bytes() == b"new!"


def test_a_new_store_on_the_same_root_reuses_the_cache(make_store, tmp_path: Path) -> None:
    archive = write_tar_gz(tmp_path / "m.tar.gz", reg("a", b"a"))
    first = make_store().materialize({"ModelDataUrl": str(archive)})
    assert make_store().materialize({"ModelDataUrl": str(archive)}) == first


def test_deleted_cache_directory_is_fetched_again(store: ArtifactStore, tmp_path: Path) -> None:
    archive = write_tar_gz(tmp_path / "m.tar.gz", reg("a", b"a"))
    path = store.materialize({"ModelDataUrl": str(archive)})
    (path / "a").unlink()
    path.rmdir()
    assert store.materialize({"ModelDataUrl": str(archive)}) == path
    assert (path / "a").read_bytes() == b"a"


def test_concurrent_materialize_shares_one_copy(store: ArtifactStore, tmp_path: Path) -> None:
    data = tar_gz_bytes(*(reg(f"f{i}", os.urandom(50_000)) for i in range(20)))
    (tmp_path / "a.tar.gz").write_bytes(data)
    (tmp_path / "b.tar.gz").write_bytes(data)  # another source, same content
    results: list[Path] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def run(i: int) -> None:
        barrier.wait()
        try:
            source = tmp_path / ("a.tar.gz", "b.tar.gz")[i % 2]
            results.append(store.materialize({"ModelDataUrl": str(source)}))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1
    assert list((store.root / "sha256").iterdir()) == [results[0]]
    assert list((store.root / "tmp").iterdir()) == []
    assert sorted(p.name for p in results[0].iterdir()) == sorted(f"f{i}" for i in range(20))


@pytest.mark.parametrize(
    "container, message",
    [
        (
            {"ModelDataUrl": "/m.tar.gz", "ModelDataSource": {"S3DataSource": {"S3Uri": "/m"}}},
            "The container sets both ModelDataUrl and ModelDataSource; set only one of them.",
        ),
        (
            {"ModelDataSource": {"S3DataSource": {}}},
            "ModelDataSource must contain S3DataSource with an S3Uri.",
        ),
        (
            {"ModelDataSource": {"S3DataSource": {"S3Uri": "/m", "S3DataType": "S3Prefix", **GZIP}}},
            "ModelDataSource with S3DataType 'S3Prefix' and CompressionType 'Gzip' is not supported: "
            "use S3Object with Gzip or None, or S3Prefix with None.",
        ),
    ],
    ids=["both", "no-uri", "prefix-gzip"],
)
def test_invalid_containers(store: ArtifactStore, container: dict, message: str) -> None:
    with pytest.raises(ArtifactError) as err:
        store.materialize(container)
    assert str(err.value) == message


def test_gzip_compression_type_requires_an_archive(store: ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"plain")
    source = {"S3Uri": url(tmp_path / "model.bin"), "S3DataType": "S3Object", "CompressionType": "Gzip"}
    with pytest.raises(ArtifactError, match="is not a valid gzip-compressed tar file"):
        store.materialize({"ModelDataSource": {"S3DataSource": source}})


def test_directory_edit_is_a_new_version(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "w.bin").write_bytes(b"v1")
    first = store.materialize({"ModelDataUrl": url(src)})
    stat = (src / "sub" / "w.bin").stat()
    (src / "sub" / "w.bin").write_bytes(b"v2-longer")  # the directory's own mtime does not change
    os.utime(src / "sub", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = store.materialize({"ModelDataUrl": url(src)})
    assert second != first and (second / "sub" / "w.bin").read_bytes() == b"v2-longer"


def test_pipe_is_refused_without_blocking(store: ArtifactStore, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ArtifactError, match="is not a regular file or a directory"):
        store.materialize({"ModelDataUrl": str(tmp_path / "pipe")})
