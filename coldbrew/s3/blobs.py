"""Object content on disk: one immutable file per object version or part, named by a random id.

Layout under ``root``::

    blobs/<id[:2]>/<id>   content, complete and fsynced before any index row names it
    tmp/<id>              a write in progress; renamed into blobs/ when complete

Names never come from keys, so no key can reach outside the store. A write is temp file, fsync,
rename: a SIGKILL leaves at most a file in tmp/ or an unreferenced file in blobs/, both removed by
:meth:`Blobs.sweep` at the next start. Content files are never changed once published, so a copy
is a hard link and a reader that opened one keeps reading it even after it is replaced.

An object of at most ``INLINE_MAX`` bytes gets no file at all: its writer keeps the bytes, and the
store puts them in the object's index row. A file costs a small object two fsyncs, a rename and
about 1.5 ms of CPU (measured on ext4: 2,000 one-line objects in batches of 8); a row in a batch's
commit costs it a few microseconds, and is as durable.
"""

from __future__ import annotations

import errno
import logging
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from .checksums import Digests

log = logging.getLogger("coldbrew.s3")

READ_BLOCK = 1024 * 1024
INLINE_MAX = 16 * 1024
"""Objects up to this size are kept in the index, not in a content file of their own."""
INLINE_HASH = 64 * 1024
"""Blocks smaller than this are hashed on the writing thread: handing them to another costs more."""
_HASHING = ThreadPoolExecutor(max_workers=8, thread_name_prefix="s3-hash")
_NO_COPY_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP}


class Blobs:
    def __init__(self, root: Path) -> None:
        self._blobs, self._tmp = root / "blobs", root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, blob: str) -> Path:
        return self._blobs / blob[:2] / blob

    def writer(self, digests: Digests) -> BlobWriter:
        return BlobWriter(self, digests)

    def publish(self, temp: Path) -> str:
        """Move a complete, fsynced temp file into blobs/; its id."""
        blob = uuid.uuid4().hex
        target = self.path(blob)
        target.parent.mkdir(exist_ok=True)
        os.rename(temp, target)
        _fsync_dir(target.parent)  # the rename itself survives power loss
        return blob

    def link(self, blob: str) -> str:
        """A second name for an existing content file (a copy that costs nothing)."""
        new = uuid.uuid4().hex
        target = self.path(new)
        target.parent.mkdir(exist_ok=True)
        try:
            os.link(self.path(blob), target)
        except OSError:  # a filesystem without hard links: copy
            temp = self.temp_path()
            with open(self.path(blob), "rb") as source, open(temp, "wb") as out:
                copy_range(source, out, 0, os.fstat(source.fileno()).st_size)
                out.flush()
                os.fsync(out.fileno())
            os.rename(temp, target)
        _fsync_dir(target.parent)
        return new

    def open(self, blob: str) -> BinaryIO:
        return open(self.path(blob), "rb")

    def delete(self, blobs: list[str]) -> None:
        for blob in blobs:
            if not blob:  # an object held in the index: nothing on disk
                continue
            try:
                self.path(blob).unlink()
            except FileNotFoundError:
                pass
            except OSError as e:  # left for the next start's sweep
                log.warning("could not delete %s: %s", self.path(blob), e)

    def temp_path(self) -> Path:
        return self._tmp / uuid.uuid4().hex

    def sweep(self, referenced: set[str]) -> int:
        """Remove what crashes left: every temp file, and content no index row names."""
        removed = 0
        for entry in self._tmp.iterdir():
            entry.unlink(missing_ok=True)
            removed += 1
        for directory in self._blobs.iterdir():
            for entry in directory.iterdir():
                if entry.name not in referenced:
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed


class BlobWriter:
    """A new content file being written, with the digests of what went into it. Blocking: call its
    methods from a worker thread.

    The first ``INLINE_MAX`` bytes are held in memory; the file is created only when more arrive, or
    when :meth:`finish` asks for one, so a small object can be kept in the index instead (:meth:`held`).
    """

    def __init__(self, blobs: Blobs, digests: Digests) -> None:
        self._blobs, self.digests = blobs, digests
        self.temp = blobs.temp_path()
        self._file: BinaryIO | None = None
        self._held: bytearray | None = bytearray()
        """What was written while no file exists; None once the file holds it."""

    def write(self, data: bytes) -> None:
        if self._held is not None:
            if len(self._held) + len(data) <= INLINE_MAX:
                self.digests.update(data)
                self._held += data
                return
            self._open()
        assert self._file is not None
        if len(data) < INLINE_HASH:
            self.digests.update(data)
            _write_all(self._file, data)
            return
        # MD5 is the slowest part of a write; it runs on a thread of its own while this one writes
        # (both release the GIL), so a PUT is bounded by the slower of the two, not their sum.
        hashed = _HASHING.submit(self.digests.update, data)
        try:
            _write_all(self._file, data)
        finally:
            hashed.result()

    def copy_from(self, source: BinaryIO, start: int, length: int) -> None:
        for block in read_range(source, start, length):
            self.write(block)

    def held(self) -> bytes | None:
        """The whole content, when it is small enough to have no file (``INLINE_MAX``)."""
        return bytes(self._held) if self._held is not None else None

    def finish(self) -> Path:
        """Flush the file to disk and close it (creating it if the content was only held); the
        temp path, for Blobs.publish."""
        if self._held is not None:
            self._open()
        assert self._file is not None
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        return self.temp

    def discard(self) -> None:
        created = self._held is None  # the file exists once nothing is only held
        self._held = None
        if self._file is not None:
            self._file.close()
            self._file = None
        if created:
            self.temp.unlink(missing_ok=True)

    def _open(self) -> None:
        self._file = open(self.temp, "wb", buffering=0)
        held, self._held = self._held, None  # the file exists now, whatever the write below does
        if held:
            _write_all(self._file, held)


def _write_all(file: BinaryIO, data: bytes | bytearray) -> None:
    # An unbuffered file's write may take less than it is given (a full disk, a signal): the
    # rest is written too, or the OSError says why not, never a short file with the full size.
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError("the content file took no more bytes")
        view = view[written:]


def read_range(source: BinaryIO, start: int, length: int, block: int = READ_BLOCK) -> Iterator[bytes]:
    source.seek(start)
    left = length
    while left > 0:
        data = source.read(min(block, left))
        if not data:
            raise OSError(f"content file ended {left} bytes early")
        left -= len(data)
        yield data


def copy_range(source: BinaryIO, out: BinaryIO, start: int, length: int) -> None:
    """Append ``length`` bytes of ``source`` from ``start`` to ``out``: in the kernel where it can
    (copy_file_range), else through a buffer."""
    out.flush()
    offset, left = start, length
    while left > 0:
        try:
            done = os.copy_file_range(source.fileno(), out.fileno(), left, offset)
        except OSError as e:
            if e.errno not in _NO_COPY_RANGE or left != length:
                raise
            break
        if done == 0:
            raise OSError(f"content file ended {left} bytes early")
        offset, left = offset + done, left - done
    else:
        return
    for data in read_range(source, start, length):
        out.write(data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
