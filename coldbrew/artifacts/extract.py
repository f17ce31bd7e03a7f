"""Turning fetched bytes into a model directory: safe tar extraction, capped copies, digests."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from .errors import ArtifactError
from .progress import TransferProgress

log = logging.getLogger("coldbrew.artifacts")

# "auto": a gzip tar (detected by content) is extracted, anything else is copied in as one file;
# "archive": must be a gzip tar (CompressionType Gzip); "file": never extracted (S3Object, None).
Mode = Literal["auto", "archive", "file"]

CHUNK = 1 << 20
MAX_MEMBERS = 1_000_000
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".gz")

_REFUSALS: dict[type[tarfile.FilterError], str] = {
    tarfile.AbsolutePathError: "has an absolute path",
    tarfile.OutsideDestinationError: "would be extracted outside the model directory",
    tarfile.SpecialFileError: "is a device, pipe or other special file",
    tarfile.AbsoluteLinkError: "is a link to an absolute path",
    tarfile.LinkOutsideDestinationError: "is a link that points outside the model directory",
}


def human_size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def too_large(label: str, max_bytes: int) -> ArtifactError:
    return ArtifactError(
        f"Model data at {label} is larger than {human_size(max_bytes)} (COLDBREW_MAX_ARTIFACT_BYTES)."
    )


class Budget:
    """Bytes still allowed into one model directory, charged as data arrives so that a source that
    lied about its size (or grew) is still stopped at the cap."""

    def __init__(self, max_bytes: int, label: str) -> None:
        self.max_bytes, self.label, self.left = max_bytes, label, max_bytes

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise too_large(self.label, self.max_bytes)


class TreeHash:
    """Digest of a directory tree. Names are part of it, so trees that differ only in file names
    do not share a cache entry."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def add(self, rel: str, digest: str) -> None:
        self._lines.append(f"{rel}\0{digest}\n")

    def hexdigest(self) -> str:
        return hashlib.sha256("".join(["tree\n", *sorted(self._lines)]).encode()).hexdigest()


def read_chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk


def write_stream(
    chunks: Iterable[bytes], dst: Path, budget: Budget, progress: TransferProgress | None = None
) -> str:
    """Write ``chunks`` to a new file ``dst``, charging ``budget``; return the sha256 of the bytes."""
    digest = hashlib.sha256()
    with open(dst, "xb") as f:
        for chunk in chunks:
            budget.take(len(chunk))
            digest.update(chunk)
            f.write(chunk)
            if progress is not None:
                progress.add(len(chunk))
    return digest.hexdigest()


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in read_chunks(f):
            digest.update(chunk)
    return digest.hexdigest()


def unpack_file(
    blob: Path, name: str, dest: Path, max_bytes: int, label: str, mode: Mode, raw_digest: str | None = None
) -> str:
    """Make ``dest`` the model directory for one fetched file and return its cache digest.

    ``raw_digest`` is given when ``blob`` is our own download (already hashed and size-checked), so
    it can be moved instead of copied; without it ``blob`` is the user's file and is only read.
    """
    if mode != "file" and _is_gzip(blob):
        extract_tar_gz(blob, dest, max_bytes, label)
        return raw_digest or hash_file(blob)
    if mode == "archive" or (mode == "auto" and name.lower().endswith(_ARCHIVE_SUFFIXES)):
        # A name that promises an archive but content that is not one is a broken upload, not a model.
        raise ArtifactError(f"Model archive {label} is not a valid gzip-compressed tar file.")
    dest.mkdir()
    if raw_digest is None:
        with open(blob, "rb") as f:
            raw_digest = write_stream(read_chunks(f), dest / name, Budget(max_bytes, label))
    else:
        os.replace(blob, dest / name)
    # The file keeps its name inside the model directory, so the name is part of the digest.
    return hashlib.sha256(f"file\0{name}\0{raw_digest}".encode()).hexdigest()


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def extract_tar_gz(archive: Path, dest: Path, max_bytes: int, label: str) -> None:
    """Extract a gzip tar into the new directory ``dest`` or raise ArtifactError.

    The "data" filter refuses links and paths that leave ``dest`` and special files, and drops
    ownership and unsafe modes. Absolute member names are refused outright (the filter would strip
    the slash): an archive built with them was not meant for a model directory. On failure
    ``dest`` may hold a partial tree; the caller extracts into scratch space and discards it.
    """
    dest.mkdir()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(dest, members=_checked_members(tar, max_bytes, label), filter="data")
    except tarfile.FilterError as e:
        reason = next((text for cls, text in _REFUSALS.items() if isinstance(e, cls)), str(e))
        raise ArtifactError(f"Model archive {label} was refused: member {e.tarinfo.name!r} {reason}.") from e
    except (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        log.info("cannot read archive %s: %r", label, e)
        raise ArtifactError(f"Model archive {label} is not a valid gzip-compressed tar file.") from e
    except OSError as e:
        raise ArtifactError(f"Could not extract model archive {label}: {e.strerror or e}.") from e


def _checked_members(tar: tarfile.TarFile, max_bytes: int, label: str) -> Iterator[tarfile.TarInfo]:
    # Headers are checked as they stream past, before any of a member's data is written, so an
    # oversized archive is refused having written at most max_bytes, and it is decompressed once.
    total = 0
    for count, member in enumerate(tar, 1):
        if count > MAX_MEMBERS:
            raise ArtifactError(f"Model archive {label} has more than {MAX_MEMBERS:,} members.")
        if member.name.startswith(("/", "\\")):
            raise ArtifactError(
                f"Model archive {label} was refused: member {member.name!r} has an absolute path."
            )
        if member.isreg():
            total += member.size
            if total > max_bytes:
                raise ArtifactError(
                    f"Model archive {label} expands to more than {human_size(max_bytes)} "
                    "(COLDBREW_MAX_ARTIFACT_BYTES)."
                )
        yield member


def copy_tree(
    src: Path, dest: Path, max_bytes: int, label: str, allowed: Callable[[Path], bool] | None = None
) -> str:
    """Copy a local model directory into ``dest``; return its tree digest. A file that is a link
    is copied only if what it points at is ``allowed`` (under the model roots); else the copy is
    refused, naming the link as it is in the directory, not where it points."""
    budget, tree = Budget(max_bytes, label), TreeHash()
    dest.mkdir()
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        rel_dir = here.relative_to(src)
        # Symlinked directories are not followed: they could loop or pull in half the disk.
        dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
        for d in dirnames:
            (dest / rel_dir / d).mkdir()
            tree.add((rel_dir / d).as_posix() + "/", "")
        for name in sorted(filenames):
            if not (here / name).is_file():  # sockets, pipes, dangling links: not model data
                log.warning("skipping %s in %s: not a regular file", here / name, label)
                continue
            if allowed is not None and (here / name).is_symlink() and not allowed(here / name):
                raise ArtifactError(
                    f"Model data {label} was refused: {(rel_dir / name).as_posix()!r} is a link to a "
                    "file outside the allowed model roots."
                )
            with open(here / name, "rb") as f:
                digest = write_stream(read_chunks(f), dest / rel_dir / name, budget)
            tree.add((rel_dir / name).as_posix(), digest)
    return tree.hexdigest()
