"""The log store: groups, streams and events in SQLite (``logs.db`` under the data dir).

Its own database file, not ``coldbrew.db``: a chatty model's inserts and the trimming that keeps
its group under the cap then never hold the write lock the control plane and the meter need, and
deleted events do not bloat the store of record.

:class:`LogWriter` is used by one thread only, the collector's; readers open their own
connections (WAL: they never wait for the writer). Every event is ordered by ``(timestamp, id)``,
and the writer keeps timestamps non-decreasing in the order events arrive, so that order is also
the order they were written in: a reader following a stream with a forward token never misses an
event written after its last read.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from coldbrew.logs.names import CAP_STREAM

log = logging.getLogger("coldbrew.logs")

EVENT_OVERHEAD = 26
"""Bytes CloudWatch Logs counts for each event besides its message (PutLogEvents' quota)."""

MAX_MESSAGE_BYTES = 256 * 1024 - EVENT_OVERHEAD
"""The largest event CloudWatch Logs takes; longer lines are split into events of this size."""

TRIM_TO = 0.9
"""A group over its cap is trimmed to this fraction of it, so it is not trimmed at every batch."""

NOTICE_INTERVAL_MS = 60_000
"""At most one "dropped events" notice per group per minute, counting every drop since the last."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS log_groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL DEFAULT 0,
    stored_events INTEGER NOT NULL DEFAULT 0,
    dropped_events INTEGER NOT NULL DEFAULT 0,
    dropped_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS log_streams (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id INTEGER NOT NULL REFERENCES log_groups (id),
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    first_event_ms INTEGER,
    last_event_ms INTEGER,
    last_ingestion_ms INTEGER,
    UNIQUE (group_id, name)
);
CREATE TABLE IF NOT EXISTS log_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id INTEGER NOT NULL,
    stream_id INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    ingestion INTEGER NOT NULL,
    size INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_events_by_stream ON log_events (stream_id, timestamp, id);
CREATE INDEX IF NOT EXISTS log_events_by_group ON log_events (group_id, timestamp, id);
"""


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # As the meter: survives a crash of the process, not of the machine; logs are not records.
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def event_size(message: str) -> int:
    return len(message.encode("utf-8", "replace")) + EVENT_OVERHEAD


@dataclass(frozen=True)
class NewStream:
    group: str
    stream: str
    created_ms: int


@dataclass(frozen=True)
class Event:
    group: str
    stream: str
    timestamp: int
    message: str


@dataclass
class _Group:
    id: int
    stored_bytes: int
    dropped_events: int = 0
    dropped_since_notice: int = 0
    dropped_bytes_since_notice: int = 0
    last_notice_ms: int | None = None
    last_timestamp: int = 0
    """Its events' timestamps never go back, across restarts too (the wall clock may step back)."""
    streams: dict[str, int] = field(default_factory=dict)


class LogWriter:
    """Writes batches of events, keeps each group under ``max_bytes_per_group`` (oldest events
    dropped first, counted, and said in the group's ``coldbrew/dropped-events`` stream) and drops
    what is older than the retention period."""

    def __init__(self, path: Path, max_bytes_per_group: int, retention_ms: int) -> None:
        self.max_bytes = max_bytes_per_group
        self.retention_ms = retention_ms
        self.conn = connect(path)
        self.conn.executescript(SCHEMA)
        self._groups: dict[str, _Group] = {}
        self._load()

    # --- writing ----------------------------------------------------------------------------

    def write(self, streams: Iterable[NewStream], events: list[Event], now_ms: int) -> None:
        """Create ``streams`` and append ``events`` (in arrival order) in one transaction."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for new in streams:
                self._stream_id(new.group, new.stream, new.created_ms)
            # In time order: coldbrew's events wait for the thread's next round, output does not.
            # (Stable: the lines of one read keep their order.)
            events, overflowed = self._within_cap(sorted(events, key=lambda e: e.timestamp), now_ms)
            self._insert(events, now_ms)
            for name in sorted({e.group for e in events}):
                self._trim(name, now_ms, keep=overflowed.get(name))
        except BaseException:
            self.conn.execute("ROLLBACK")
            self._load()  # what the rolled-back transaction had created is gone again
            raise
        self.conn.execute("COMMIT")

    def _load(self) -> None:
        """The ids and sizes of the groups and streams, from the store; what the groups' notices
        have counted so far is kept."""
        before, self._groups = self._groups, {}
        groups = self.conn.execute("SELECT id, name, stored_bytes, dropped_events FROM log_groups")
        for group_id, name, stored, dropped in groups:
            group = self._groups[name] = _Group(group_id, stored, dropped)
            previous = before.get(name)
            if previous is not None and previous.id == group_id:
                group.dropped_since_notice = previous.dropped_since_notice
                group.dropped_bytes_since_notice = previous.dropped_bytes_since_notice
                group.last_notice_ms = previous.last_notice_ms
        for group_name, stream, stream_id in self.conn.execute(
            "SELECT g.name, s.name, s.id FROM log_streams s JOIN log_groups g ON g.id = s.group_id"
        ):
            self._groups[group_name].streams[stream] = stream_id
        by_id = {g.id: g for g in self._groups.values()}
        for group_id, last in self.conn.execute(
            "SELECT group_id, MAX(timestamp) FROM log_events GROUP BY group_id"
        ):
            if group_id in by_id:
                by_id[group_id].last_timestamp = int(last)

    def _group(self, name: str, now_ms: int) -> _Group:
        group = self._groups.get(name)
        if group is None:
            cursor = self.conn.execute(
                "INSERT INTO log_groups (name, created_ms) VALUES (?, ?)", [name, now_ms]
            )
            assert cursor.lastrowid is not None
            group = self._groups[name] = _Group(cursor.lastrowid, 0)
        return group

    def _stream_id(self, group_name: str, stream: str, now_ms: int) -> int:
        group = self._group(group_name, now_ms)
        stream_id = group.streams.get(stream)
        if stream_id is None:
            cursor = self.conn.execute(
                "INSERT INTO log_streams (group_id, name, created_ms) VALUES (?, ?, ?)",
                [group.id, stream, now_ms],
            )
            assert cursor.lastrowid is not None
            stream_id = group.streams[stream] = cursor.lastrowid
        return stream_id

    def _within_cap(self, events: list[Event], now_ms: int) -> tuple[list[Event], dict[str, int]]:
        """A batch bigger than a group's cap keeps only its newest events (the oldest would be
        trimmed the moment they were written); for each group it was cut for, the bytes it kept:
        everything the group stored before is older still, so it goes too (``_trim(keep=...)``)."""
        sizes: dict[str, int] = {}
        for event in events:
            sizes[event.group] = sizes.get(event.group, 0) + event_size(event.message)
        over = {g for g, size in sizes.items() if size > self.max_bytes}
        if not over:
            return events, {}
        kept: list[Event] = []
        room = {g: int(self.max_bytes * TRIM_TO) for g in over}
        kept_bytes = dict.fromkeys(over, 0)
        dropped = {g: [0, 0] for g in over}
        full: set[str] = set()
        for event in reversed(events):
            if event.group in over:
                size = event_size(event.message)
                if event.group in full or size > room[event.group]:
                    full.add(event.group)  # and every older event of the batch goes too
                    dropped[event.group][0] += 1
                    dropped[event.group][1] += size
                    continue
                room[event.group] -= size
                kept_bytes[event.group] += size
            kept.append(event)
        kept.reverse()
        for name, (count, size) in dropped.items():
            self._dropped(self._group(name, now_ms), count, size)
        return kept, kept_bytes

    def _insert(self, events: list[Event], now_ms: int) -> None:
        rows = []
        per_stream: dict[int, tuple[int, int]] = {}
        per_group: dict[int, tuple[int, int]] = {}
        for event in events:
            group = self._group(event.group, now_ms)
            stream_id = self._stream_id(event.group, event.stream, now_ms)
            timestamp = group.last_timestamp = max(event.timestamp, group.last_timestamp)
            size = event_size(event.message)
            rows.append((group.id, stream_id, timestamp, now_ms, size, event.message))
            first, _ = per_stream.get(stream_id, (timestamp, timestamp))
            per_stream[stream_id] = (first, timestamp)
            count, total = per_group.get(group.id, (0, 0))
            per_group[group.id] = (count + 1, total + size)
            group.stored_bytes += size
        self.conn.executemany(
            "INSERT INTO log_events (group_id, stream_id, timestamp, ingestion, size, message) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        self.conn.executemany(
            "UPDATE log_streams SET first_event_ms = COALESCE(first_event_ms, ?), last_event_ms = ?, "
            "last_ingestion_ms = ? WHERE id = ?",
            [(first, last, now_ms, stream_id) for stream_id, (first, last) in per_stream.items()],
        )
        self.conn.executemany(
            "UPDATE log_groups SET stored_events = stored_events + ?, stored_bytes = stored_bytes + ? "
            "WHERE id = ?",
            [(count, total, group_id) for group_id, (count, total) in per_group.items()],
        )

    def _trim(self, name: str, now_ms: int, keep: int | None = None) -> None:
        """Drop the group's oldest events until it holds ``keep`` bytes (default: TRIM_TO of the
        cap, once it is over the cap)."""
        group = self._groups[name]
        target = int(self.max_bytes * TRIM_TO) if keep is None else keep
        if group.stored_bytes > self.max_bytes or (keep is not None and group.stored_bytes > keep):
            excess = group.stored_bytes - target
            dropped = dropped_bytes = 0
            boundary: tuple[int, int] | None = None
            rows = self.conn.execute(
                "SELECT timestamp, id, size FROM log_events WHERE group_id = ? ORDER BY timestamp, id",
                [group.id],
            )
            for timestamp, event_id, size in rows:
                dropped += 1
                dropped_bytes += size
                boundary = (timestamp, event_id)
                if dropped_bytes >= excess:
                    break
            rows.close()
            if boundary is not None:
                self.conn.execute(
                    "DELETE FROM log_events WHERE group_id = ? AND (timestamp, id) <= (?, ?)",
                    [group.id, *boundary],
                )
                self.conn.execute(
                    "UPDATE log_groups SET stored_events = stored_events - ?, "
                    "stored_bytes = stored_bytes - ? WHERE id = ?",
                    [dropped, dropped_bytes, group.id],
                )
                group.stored_bytes -= dropped_bytes
                self._dropped(group, dropped, dropped_bytes)
        last = group.last_notice_ms
        if group.dropped_since_notice and (last is None or now_ms - last >= NOTICE_INTERVAL_MS):
            self._notice(name, group, now_ms)

    def _dropped(self, group: _Group, events: int, size: int) -> None:
        self.conn.execute(
            "UPDATE log_groups SET dropped_events = dropped_events + ?, dropped_bytes = dropped_bytes + ? "
            "WHERE id = ?",
            [events, size, group.id],
        )
        group.dropped_events += events
        group.dropped_since_notice += events
        group.dropped_bytes_since_notice += size

    def _notice(self, name: str, group: _Group, now_ms: int) -> None:
        total = self.conn.execute("SELECT dropped_events FROM log_groups WHERE id = ?", [group.id]).fetchone()
        message = (
            f"coldbrew: dropped the {group.dropped_since_notice:,} oldest events of this log group "
            f"({_size(group.dropped_bytes_since_notice)}) to keep it under its cap of "
            f"{_size(self.max_bytes)} (COLDBREW_LOGS_MAX_BYTES_PER_ENDPOINT); "
            f"{int(total[0]):,} dropped in all"
        )
        group.dropped_since_notice = group.dropped_bytes_since_notice = 0
        group.last_notice_ms = now_ms
        self._insert([Event(name, CAP_STREAM, now_ms, message)], now_ms)
        log.warning("%s: %s", name, message.removeprefix("coldbrew: "))

    # --- retention ----------------------------------------------------------------------------

    def prune(self, now_ms: int, live_streams: set[tuple[str, str]]) -> int:
        """Drop events older than the retention period, then the streams and groups they leave
        empty (except streams that are still being written); returns the events dropped."""
        cutoff = now_ms - self.retention_ms
        dropped = 0
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            old = self.conn.execute(
                "SELECT group_id, COUNT(*), SUM(size) FROM log_events WHERE timestamp < ? GROUP BY group_id",
                [cutoff],
            ).fetchall()
            for group_id, count, size in old:
                self.conn.execute(
                    "DELETE FROM log_events WHERE group_id = ? AND timestamp < ?", [group_id, cutoff]
                )
                self.conn.execute(
                    "UPDATE log_groups SET stored_events = stored_events - ?, "
                    "stored_bytes = stored_bytes - ? WHERE id = ?",
                    [count, size, group_id],
                )
                dropped += count
            stale = self.conn.execute(
                "SELECT s.id, g.name, s.name FROM log_streams s JOIN log_groups g ON g.id = s.group_id "
                "WHERE COALESCE(s.last_ingestion_ms, s.created_ms) < ? "
                "AND NOT EXISTS (SELECT 1 FROM log_events e WHERE e.stream_id = s.id)",
                [cutoff],
            ).fetchall()
            for stream_id, group, stream in stale:
                if (group, stream) not in live_streams:
                    self.conn.execute("DELETE FROM log_streams WHERE id = ?", [stream_id])
            self.conn.execute(
                "DELETE FROM log_groups WHERE created_ms < ? "
                "AND NOT EXISTS (SELECT 1 FROM log_streams s WHERE s.group_id = log_groups.id)",
                [cutoff],
            )
        except BaseException:
            self.conn.execute("ROLLBACK")
            self._load()
            raise
        self.conn.execute("COMMIT")
        self._load()
        return dropped

    def totals(self) -> dict[str, tuple[int, int]]:
        """Per group: bytes stored and events dropped for the cap (read from other threads)."""
        return {name: (g.stored_bytes, g.dropped_events) for name, g in dict(self._groups).items()}

    def close(self) -> None:
        self.conn.close()


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size:,} bytes"
