"""The content-addressed artifact cache.

Layout under ``root``::

    sha256/<digest>/   one extracted model directory per distinct content, shared by all models
    index/<key>.json   source identity (file stat, S3 ETag, prefix listing) -> digest: fetched once
    tmp/               scratch for downloads and extractions, renamed into sha256/ when complete
    empty/             what a container without model data gets
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .permissions import ContentGroups, reseal, seal, sealed
from .roots import ModelRoots
from .s3 import make_client
from .sources import Source, source_for

log = logging.getLogger("coldbrew.artifacts")

_STALE_TMP_S = 24 * 3600
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ArtifactStore:
    """Materializes model data into ``root``. Thread-safe; ``materialize`` does blocking I/O, so call
    it from a worker thread, never from the event loop."""

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        s3_endpoint_url: str | None = None,
        roots: ModelRoots | None = None,
        groups: ContentGroups | None = None,
    ) -> None:
        """``s3_endpoint_url``: where ``s3://`` data is fetched from (coldbrew's embedded S3);
        None for boto3's own configuration. ``roots``: where local model data may be read from
        (default: anywhere). ``groups``: each entry's own group, when workers run as users of
        their own (:mod:`.permissions`); None keeps entries to the server's user."""
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.root, self.max_bytes = Path(root), max_bytes
        self.roots = roots if roots is not None else ModelRoots.anywhere()
        self.groups = groups
        self._cas, self._index, self._tmp = self.root / "sha256", self.root / "index", self.root / "tmp"
        for d in (self.root, self._cas, self._index, self._tmp):
            d.mkdir(parents=True, exist_ok=True)
            # Only the server crosses these; a worker sees its own entry on a mountpoint.
            d.chmod(0o700)
        self._sweep_tmp()
        self._locks = KeyedLocks()
        self._client: Any = None
        self._s3_endpoint_url = s3_endpoint_url
        self._client_lock = threading.Lock()

    def materialize(self, container: Mapping[str, Any]) -> Path:
        """Return the directory holding the model data of a ContainerDefinition (what SageMaker
        mounts as /opt/ml/model), fetching and extracting it unless an unchanged copy is cached.
        Raises ArtifactError, whose message is fit for a FailureReason, for every failure."""
        source = source_for(container, self._s3, self.roots)
        if source is None:
            empty = self.root / "empty"
            empty.mkdir(exist_ok=True)
            empty.chmod(0o755)  # nothing in it to protect, and any worker may be given it
            return empty
        try:
            return self._materialize(source)
        except ArtifactError as e:
            log.warning("model data %s: %s", source.label, e)
            raise
        except OSError as e:
            log.warning("model data %s: %r", source.label, e)
            reason = e.strerror or e
            raise ArtifactError(f"Could not prepare model data from {source.label}: {reason}.") from e
        except Exception as e:
            log.exception("unexpected failure materializing %s", source.label)
            raise ArtifactError(
                f"Could not prepare model data from {source.label}: internal error ({type(e).__name__}); "
                "see the coldbrew server log."
            ) from e

    def _materialize(self, source: Source) -> Path:
        identity = source.identity()
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        # Per source, so concurrent endpoints on one model wait for one fetch instead of racing.
        with self._locks.hold("source:" + key):
            cached = self._lookup(key)
            if cached is not None:
                log.debug("model data %s: unchanged, using %s", source.label, cached)
                return cached
            started = time.monotonic()
            with tempfile.TemporaryDirectory(dir=self._tmp, prefix="fetch-") as work:
                digest = source.fetch(Path(work), self.max_bytes)
                path = self._publish(Path(work) / "model", digest)
            self._remember(key, digest, source.label)
            log.info("model data %s: ready in %s (%.2fs)", source.label, path, time.monotonic() - started)
            return path

    def _lookup(self, key: str) -> Path | None:
        try:
            digest = json.loads((self._index / f"{key}.json").read_text())["digest"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            return None  # a damaged entry must not steer us to a path outside the cache
        path = self._cas / digest
        # The entry may outlive its directory (someone cleaned the cache); then fetch again.
        if not path.is_dir():
            return None
        if not sealed(path, self.groups):
            with self._locks.hold("digest:" + digest):
                if not sealed(path, self.groups):
                    reseal(path, self.groups)
        return path

    def _publish(self, staged: Path, digest: str) -> Path:
        final = self._cas / digest
        with self._locks.hold("digest:" + digest):
            if final.is_dir():
                log.info("content %s already cached; sharing it", digest[:12])
                return final
            seal(staged, self.groups)
            try:
                os.rename(staged, final)  # atomic: readers see a complete tree or none
            except OSError:
                if not final.is_dir():  # another process may have published it first
                    raise
        return final

    def _remember(self, key: str, digest: str, label: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._index, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"digest": digest, "source": label}, f)
        os.replace(tmp, self._index / f"{key}.json")

    def _s3(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = make_client(self._s3_endpoint_url)
            return self._client

    def _sweep_tmp(self) -> None:
        # Scratch left by a crash would otherwise hold up to max_bytes each forever; a day is far
        # longer than any fetch, so this never removes one still in progress.
        cutoff = time.time() - _STALE_TMP_S
        for entry in self._tmp.iterdir():
            try:
                if entry.lstat().st_mtime >= cutoff:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except OSError as e:
                log.warning("could not remove stale %s: %s", entry, e)


class KeyedLocks:
    """One lock per key, dropped when nobody holds or awaits it, so the table stays small."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, list[int]]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[key]
