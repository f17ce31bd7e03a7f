"""The durable async queue: one SQLite file (``<data_dir>/async.db``, WAL, synchronous=FULL).

A request's row is committed before InvokeEndpointAsync answers 202, so an acknowledged request
survives a SIGKILL and a power loss. States: ``queued`` → ``running`` (claimed by the dispatcher)
→ ``succeeded`` | ``failed`` (its one result object is written). ``attempts`` counts the times a
request was started, i.e. handed to a worker (claimed ahead of need and never started does not
count). A restart puts ``running`` rows back to ``queued``; a request started before is checked
for a result an earlier run wrote before it is processed again. Finished rows are kept a day (for
counts), then pruned.

Every method blocks; the dispatcher calls them from worker threads, in batches, so one commit
serves many requests.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from coldbrew.async_inference.requests import AsyncRequest

FINISHED_RETENTION_S = 24 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    received_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    request TEXT NOT NULL,
    finished_at REAL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS requests_queue ON requests (endpoint, state, seq);
CREATE INDEX IF NOT EXISTS requests_expiry ON requests (state, expires_at);
CREATE INDEX IF NOT EXISTS requests_finished ON requests (finished_at);
"""


@dataclass(frozen=True)
class Outcome:
    id: str
    succeeded: bool
    detail: str | None = None


@dataclass(frozen=True)
class Started:
    """The request was handed to a worker: one more attempt."""

    id: str


Update = Outcome | Started


@dataclass(frozen=True)
class Backlog:
    """An endpoint's requests not yet finished: queued or being processed."""

    size: int
    oldest_received_at: float


class AsyncQueue:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def enqueue(self, requests: Iterable[AsyncRequest]) -> None:
        rows = [(r.id, r.endpoint_key, r.received_at, r.expires_at, r.to_json()) for r in requests]
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO requests (id, endpoint, state, received_at, expires_at, request) "
                "VALUES (?, ?, 'queued', ?, ?, ?)",
                rows,
            )

    def claim(self, endpoint: str, limit: int) -> list[AsyncRequest]:
        """Up to ``limit`` of the endpoint's queued requests, oldest first, now ``running``."""
        return self._claim("endpoint = ? AND state = 'queued' ORDER BY seq", [endpoint], limit)

    def claim_expired(self, now: float, limit: int) -> list[AsyncRequest]:
        """Queued requests of any endpoint whose TTL ran out before ``now``, now ``running``."""
        return self._claim("state = 'queued' AND expires_at < ? ORDER BY seq", [now], limit)

    def _claim(self, where: str, params: list[object], limit: int) -> list[AsyncRequest]:
        if limit <= 0:
            return []
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                f"SELECT seq, attempts, request FROM requests WHERE {where} LIMIT ?", [*params, limit]
            ).fetchall()
            self._db.executemany(
                "UPDATE requests SET state = 'running' WHERE seq = ?", [(seq,) for seq, _, _ in rows]
            )
        return [AsyncRequest.from_json(text, attempts) for _, attempts, text in rows]

    def update(self, updates: Iterable[Update], now: float) -> None:
        """Starts and outcomes, in one transaction (the dispatcher's group commit).

        A batch of starts alone is committed without an fsync (synchronous=NORMAL: it survives a
        SIGKILL, and the next fsynced commit makes it durable): a start only counts attempts, and
        what may have started before a power loss is found by ``recover`` anyway.
        """
        updates = list(updates)
        only_starts = all(isinstance(u, Started) for u in updates)
        started = [(u.id,) for u in updates if isinstance(u, Started)]
        finished = [
            ("succeeded" if u.succeeded else "failed", now, u.detail, u.id)
            for u in updates
            if isinstance(u, Outcome)
        ]
        with self._lock:
            if only_starts:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._update(started, finished)
            finally:
                if only_starts:
                    self._db.execute("PRAGMA synchronous=FULL")

    def _update(self, started: list[tuple[str]], finished: list[tuple[str, float, str | None, str]]) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "UPDATE requests SET attempts = attempts + 1 WHERE id = ? AND state = 'running'", started
            )
            self._db.executemany(
                "UPDATE requests SET state = ?, finished_at = ?, detail = ? "
                "WHERE id = ? AND state = 'running'",
                finished,
            )

    def finish(self, outcomes: Iterable[Outcome], now: float) -> None:
        self.update(list(outcomes), now)

    def requeue(self, ids: Iterable[str], refund: bool = False) -> None:
        """Back to the queue at its old place: claimed but not started, or a worker crashed under
        it; ``refund``: its start does not count (it was refused for capacity before it ran)."""
        attempts = "max(0, attempts - 1)" if refund else "attempts"
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                f"UPDATE requests SET state = 'queued', attempts = {attempts} "
                "WHERE id = ? AND state = 'running'",
                [(i,) for i in ids],
            )

    def recover(self) -> list[str]:
        """At start: requests an earlier run had claimed go back to the queue; their ids. Any of
        them may have been started and even have its outcome written (a claim is committed with an
        fsync before anything of it starts, so no started request is missed here)."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                "UPDATE requests SET state = 'queued' WHERE state = 'running' RETURNING id"
            ).fetchall()
        return [request_id for (request_id,) in rows]

    def endpoints_with_work(self) -> set[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT endpoint FROM requests WHERE state = 'queued'"
            ).fetchall()
        return {endpoint for (endpoint,) in rows}

    def backlog(self) -> dict[str, Backlog]:
        with self._lock:
            rows = self._db.execute(
                "SELECT endpoint, count(*), min(received_at) FROM requests "
                "WHERE state IN ('queued', 'running') GROUP BY endpoint"
            ).fetchall()
        return {endpoint: Backlog(n, oldest) for endpoint, n, oldest in rows}

    def counts(self) -> dict[str, int]:
        """Requests by state (for tests, benchmarks and the operator)."""
        with self._lock:
            rows = self._db.execute("SELECT state, count(*) FROM requests GROUP BY state").fetchall()
        return dict(rows)

    def prune(self, now: float) -> int:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            return self._db.execute(
                "DELETE FROM requests WHERE finished_at IS NOT NULL AND finished_at < ?",
                [now - FINISHED_RETENTION_S],
            ).rowcount
