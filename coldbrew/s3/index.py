"""The embedded S3's index: buckets, objects, multipart uploads and their parts, in SQLite.

An object exists exactly when its row does: the row is written, in one transaction, only after
its content file is complete on disk (:mod:`coldbrew.s3.blobs`), so a crash at any moment leaves
either the old object or the new one, never part of one. A small object's content is in its row
(``data``, with an empty ``blob``: see :data:`coldbrew.s3.blobs.INLINE_MAX`). Keys are stored as
UTF-8 BLOBs, whose byte order is the order S3 lists keys in.

Not thread-safe: :class:`coldbrew.s3.store.S3Store` serializes every call with its lock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checksums import Checksum

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, created REAL NOT NULL, region TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL, key BLOB NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL,
    modified REAL NOT NULL, blob TEXT NOT NULL, meta TEXT NOT NULL, data BLOB,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key BLOB NOT NULL, initiated REAL NOT NULL, meta TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (bucket, key, initiated);
CREATE TABLE IF NOT EXISTS parts (
    upload TEXT NOT NULL, number INTEGER NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL,
    modified REAL NOT NULL, blob TEXT NOT NULL, checksum TEXT,
    PRIMARY KEY (upload, number)
) WITHOUT ROWID;
"""

STANDARD_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language", "expires")
DEFAULT_CONTENT_TYPE = "binary/octet-stream"  # what S3 stores when the upload names none


@dataclass(frozen=True)
class ObjectMeta:
    """What a client set on an object besides its bytes."""

    content_type: str = DEFAULT_CONTENT_TYPE
    headers: dict[str, str] = field(default_factory=dict)  # STANDARD_HEADERS, lower-case names
    user: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* without the prefix
    checksum: Checksum | None = None
    # For a multipart upload: the x-amz-checksum-algorithm and -type it was created with.
    checksum_algorithm: str | None = None
    checksum_type: str | None = None
    parts: int = 0  # how many parts a multipart object was completed from

    def to_json(self) -> str:
        data: dict[str, Any] = {"type": self.content_type, "headers": self.headers, "user": self.user}
        if self.checksum is not None:
            data["checksum"] = self.checksum.to_json()
        if self.checksum_algorithm is not None:
            data["checksum_upload"] = [self.checksum_algorithm, self.checksum_type]
        if self.parts:
            data["parts"] = self.parts
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ObjectMeta:
        data = json.loads(text)
        return cls(
            content_type=data.get("type", DEFAULT_CONTENT_TYPE),
            headers=dict(data.get("headers", {})),
            user=dict(data.get("user", {})),
            checksum=Checksum.from_json(data.get("checksum")),
            checksum_algorithm=data.get("checksum_upload", [None, None])[0],
            checksum_type=data.get("checksum_upload", [None, None])[1],
            parts=int(data.get("parts", 0)),
        )


@dataclass(frozen=True)
class ObjectRow:
    key: bytes
    size: int
    etag: str  # hex MD5 (or S3's multipart form), without quotes
    modified: float
    blob: str
    """Its content file's id; empty when the content is ``data``."""
    meta: ObjectMeta
    data: bytes | None = None
    """The content of an object kept in the index (never loaded by listings)."""

    @property
    def inline(self) -> bool:
        return not self.blob


@dataclass(frozen=True)
class UploadRow:
    id: str
    bucket: str
    key: bytes
    initiated: float
    meta: ObjectMeta


@dataclass(frozen=True)
class PartRow:
    number: int
    size: int
    etag: str
    modified: float
    blob: str
    checksum: str | None  # base64, of the upload's checksum algorithm


class Index:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: an object acknowledged to the client survives power loss too, not only a crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(objects)")}
        if "data" not in columns:  # an index from before small objects were kept in it
            try:
                self._db.execute("ALTER TABLE objects ADD COLUMN data BLOB")
            except sqlite3.OperationalError as e:
                if "duplicate column" not in str(e):  # another process added it first
                    raise

    def close(self) -> None:
        self._db.close()

    # --- buckets ----------------------------------------------------------------------------

    def bucket(self, name: str) -> tuple[float, str] | None:
        row = self._db.execute("SELECT created, region FROM buckets WHERE name = ?", (name,)).fetchone()
        return (row[0], row[1]) if row else None

    def buckets(self) -> list[tuple[str, float, str]]:
        return [tuple(r) for r in self._db.execute("SELECT name, created, region FROM buckets ORDER BY name")]

    def add_bucket(self, name: str, created: float, region: str) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO buckets (name, created, region) VALUES (?, ?, ?)", (name, created, region)
        )
        return cursor.rowcount == 1

    def bucket_has_objects(self, name: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM objects WHERE bucket = ? LIMIT 1", (name,)).fetchone() is not None
        )

    def remove_bucket(self, name: str) -> list[str]:
        """Drop an empty bucket and its unfinished uploads; the part files to delete."""
        with self._transaction():
            blobs = [
                r[0]
                for r in self._db.execute(
                    "SELECT blob FROM parts WHERE upload IN (SELECT id FROM uploads WHERE bucket = ?)",
                    (name,),
                )
            ]
            self._db.execute(
                "DELETE FROM parts WHERE upload IN (SELECT id FROM uploads WHERE bucket = ?)", (name,)
            )
            self._db.execute("DELETE FROM uploads WHERE bucket = ?", (name,))
            self._db.execute("DELETE FROM buckets WHERE name = ?", (name,))
        return blobs

    # --- objects ----------------------------------------------------------------------------

    def object(self, bucket: str, key: bytes) -> ObjectRow | None:
        row = self._db.execute(
            "SELECT key, size, etag, modified, blob, meta, data FROM objects WHERE bucket = ? AND key = ?",
            (bucket, key),
        ).fetchone()
        return _object(row) if row else None

    def put_object(self, bucket: str, row: ObjectRow) -> str | None:
        """Insert or replace; the replaced object's content file, to delete once committed."""
        (replaced,) = self.put_objects([(bucket, row)])
        return replaced

    def put_objects(self, rows: list[tuple[str, ObjectRow]]) -> list[str | None]:
        """``put_object`` for many (bucket, row), in one transaction (one fsync for all)."""
        replaced: list[str | None] = []
        with self._transaction():
            for bucket, row in rows:
                old = self._db.execute(
                    "SELECT blob FROM objects WHERE bucket = ? AND key = ?", (bucket, row.key)
                ).fetchone()
                self._insert(bucket, row)
                replaced.append(old[0] if old else None)
        return replaced

    def remove_objects(self, bucket: str, keys: list[bytes]) -> dict[bytes, str]:
        """Delete the keys that exist, in one transaction (one fsync for a DeleteObjects of 1,000
        keys); their content files, by key."""
        removed: dict[bytes, str] = {}
        with self._transaction():
            for key in keys:
                row = self._db.execute(
                    "DELETE FROM objects WHERE bucket = ? AND key = ? RETURNING blob", (bucket, key)
                ).fetchone()
                if row:
                    removed[key] = row[0]
        return removed

    def scan(self, bucket: str, start: bytes, stop: bytes | None, limit: int) -> list[ObjectRow]:
        """Objects with ``start <= key < stop`` (no upper bound for None), in key order."""
        columns = "SELECT key, size, etag, modified, blob, meta FROM objects WHERE bucket = ? AND key >= ?"
        if stop is None:
            rows = self._db.execute(f"{columns} ORDER BY key LIMIT ?", (bucket, start, limit))
        else:
            rows = self._db.execute(
                f"{columns} AND key < ? ORDER BY key LIMIT ?", (bucket, start, stop, limit)
            )
        return [_object(r) for r in rows]

    # --- multipart uploads ------------------------------------------------------------------

    def add_upload(self, upload: UploadRow) -> None:
        self._db.execute(
            "INSERT INTO uploads (id, bucket, key, initiated, meta) VALUES (?, ?, ?, ?, ?)",
            (upload.id, upload.bucket, upload.key, upload.initiated, upload.meta.to_json()),
        )

    def upload(self, upload_id: str) -> UploadRow | None:
        row = self._db.execute(
            "SELECT id, bucket, key, initiated, meta FROM uploads WHERE id = ?", (upload_id,)
        ).fetchone()
        return _upload(row) if row else None

    def uploads(self, bucket: str, start: bytes, limit: int) -> list[UploadRow]:
        rows = self._db.execute(
            "SELECT id, bucket, key, initiated, meta FROM uploads WHERE bucket = ? AND key >= ? "
            "ORDER BY key, initiated, id LIMIT ?",
            (bucket, start, limit),
        )
        return [_upload(r) for r in rows]

    def put_part(self, upload_id: str, part: PartRow) -> str | None:
        with self._transaction():
            old = self._db.execute(
                "SELECT blob FROM parts WHERE upload = ? AND number = ?", (upload_id, part.number)
            ).fetchone()
            self._db.execute(
                "INSERT OR REPLACE INTO parts (upload, number, size, etag, modified, blob, checksum) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (upload_id, part.number, part.size, part.etag, part.modified, part.blob, part.checksum),
            )
        return old[0] if old else None

    def parts(self, upload_id: str, after: int = 0, limit: int = 10_001) -> list[PartRow]:
        rows = self._db.execute(
            "SELECT number, size, etag, modified, blob, checksum FROM parts WHERE upload = ? AND number > ? "
            "ORDER BY number LIMIT ?",
            (upload_id, after, limit),
        )
        return [PartRow(*r) for r in rows]

    def remove_upload(self, upload_id: str, completed: tuple[str, ObjectRow] | None = None) -> list[str]:
        """Drop an upload and its parts (and, when it completes, add its object in the same
        transaction); the content files no row names any more."""
        with self._transaction():
            blobs = [r[0] for r in self._db.execute("SELECT blob FROM parts WHERE upload = ?", (upload_id,))]
            self._db.execute("DELETE FROM parts WHERE upload = ?", (upload_id,))
            self._db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))
            if completed is not None:
                bucket, row = completed
                old = self._db.execute(
                    "SELECT blob FROM objects WHERE bucket = ? AND key = ?", (bucket, row.key)
                ).fetchone()
                if old:
                    blobs.append(old[0])
                self._insert(bucket, row)
        return blobs

    def _insert(self, bucket: str, row: ObjectRow) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO objects (bucket, key, size, etag, modified, blob, meta, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (bucket, row.key, row.size, row.etag, row.modified, row.blob, row.meta.to_json(), row.data),
        )

    def referenced_blobs(self) -> set[str]:
        objects = (r[0] for r in self._db.execute("SELECT blob FROM objects"))
        parts = (r[0] for r in self._db.execute("SELECT blob FROM parts"))
        return set(objects) | set(parts)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


def _object(row: Iterable[Any]) -> ObjectRow:
    key, size, etag, modified, blob, meta, *data = row
    content = bytes(data[0]) if data and data[0] is not None else None
    return ObjectRow(bytes(key), size, etag, modified, blob, ObjectMeta.from_json(meta), content)


def _upload(row: Iterable[Any]) -> UploadRow:
    upload_id, bucket, key, initiated, meta = row
    return UploadRow(upload_id, bucket, bytes(key), initiated, ObjectMeta.from_json(meta))
