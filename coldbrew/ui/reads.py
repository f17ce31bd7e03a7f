"""The dashboard's reads of the stores: plain SQL over read-only connections, in worker threads.

Statistics follow CloudWatch's own rules (:mod:`coldbrew.ui.latency`, :mod:`coldbrew.ui.charts`),
costs come from what ``coldbrew cost`` prints (:func:`coldbrew.metering.query.cost_report`), so a
number on a page is the number a client gets.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StoredEndpoint:
    name: str
    arn: str
    status: str
    failure_reason: str | None
    created_at: float
    modified_at: float
    config_name: str
    deployment: dict[str, Any]
    """``{"ConfigName", "Config", "Models"}``: what the endpoint runs (its snapshot)."""
    summaries: list[dict[str, Any]] | None
    """Its ProductionVariantSummary list (desired and current capacities), once deployed."""
    pending: dict[str, Any] | None
    """A deployment being rolled out (UpdateEndpoint), if any."""


Parse = Callable[[str], Any]


def _stored(row: sqlite3.Row, parse: Parse = json.loads) -> StoredEndpoint:
    return StoredEndpoint(
        name=row["name"],
        arn=row["arn"],
        status=row["status"],
        failure_reason=row["failure_reason"],
        created_at=float(row["created_at"]),
        modified_at=float(row["modified_at"]),
        config_name=row["config_name"],
        deployment=parse(row["deployment"]),
        summaries=parse(row["variants"]) if row["variants"] else None,
        pending=json.loads(row["pending_deployment"]) if row["pending_deployment"] else None,
    )


_ENDPOINT_COLUMNS = (
    "name, arn, status, failure_reason, created_at, modified_at, config_name, deployment, variants, "
    "pending_deployment"
)


def endpoints(conn: sqlite3.Connection, parse: Parse = json.loads) -> list[StoredEndpoint]:
    """Every endpoint; ``parse``: how deployment snapshots are read (a :class:`ParsedJson`, to
    parse each one once, not on every page load)."""
    rows = conn.execute(f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints ORDER BY name_key").fetchall()
    return [_stored(r, parse) for r in rows]


class ParsedJson:
    """JSON texts parsed once: by their text, so a changed snapshot is parsed again. The values are
    shared between page loads; views copy before they change anything (``masked_deployment``)."""

    def __init__(self, limit: int = 20_000) -> None:
        self.limit = limit
        self._parsed: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, text: str) -> Any:
        found = self._parsed.get(text)
        if found is None:
            found = json.loads(text)
            with self._lock:
                if len(self._parsed) >= self.limit:  # bounded: old snapshots go all at once
                    self._parsed.clear()
                self._parsed[text] = found
        return found


def endpoint(conn: sqlite3.Connection, name: str) -> StoredEndpoint | None:
    row = conn.execute(
        f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints WHERE name_key = ?", [name.lower()]
    ).fetchone()
    return None if row is None else _stored(row)


@dataclass(frozen=True, slots=True)
class LogLine:
    timestamp_ms: int
    stream: str
    message: str


def recent_log_lines(conn: sqlite3.Connection, group: str, limit: int) -> list[LogLine]:
    """The group's newest ``limit`` events, oldest first (as a terminal shows a log's tail)."""
    found = conn.execute("SELECT id FROM log_groups WHERE name = ?", [group]).fetchone()
    if found is None:
        return []
    rows = conn.execute(
        "SELECT e.timestamp, s.name, e.message FROM log_events e JOIN log_streams s ON s.id = e.stream_id "
        "WHERE e.group_id = ? ORDER BY e.timestamp DESC, e.id DESC LIMIT ?",
        [found[0], limit],
    ).fetchall()
    return [LogLine(int(ts), str(stream), str(message)) for ts, stream, message in reversed(rows)]


@dataclass(frozen=True, slots=True)
class AsyncRequestRow:
    id: str
    state: str
    attempts: int
    received_at: float
    finished_at: float | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class AsyncQueueState:
    counts: dict[str, int]
    """Requests by state: queued, running, succeeded, failed (finished ones are kept a day)."""
    oldest_unfinished_at: float | None
    recent: list[AsyncRequestRow]


def async_queue(conn: sqlite3.Connection, endpoint_key: str, limit: int = 20) -> AsyncQueueState:
    counts = dict(
        conn.execute("SELECT state, count(*) FROM requests WHERE endpoint = ? GROUP BY state", [endpoint_key])
    )
    oldest = conn.execute(
        "SELECT min(received_at) FROM requests WHERE endpoint = ? AND state IN ('queued', 'running')",
        [endpoint_key],
    ).fetchone()[0]
    recent = [
        AsyncRequestRow(r["id"], r["state"], r["attempts"], r["received_at"], r["finished_at"], r["detail"])
        for r in conn.execute(
            "SELECT id, state, attempts, received_at, finished_at, detail FROM requests WHERE endpoint = ? "
            "ORDER BY seq DESC LIMIT ?",
            [endpoint_key, limit],
        )
    ]
    return AsyncQueueState(counts, oldest, recent)


@dataclass(frozen=True, slots=True)
class TransformJobRow:
    name: str
    status: str
    model_name: str
    instance_type: str
    instance_count: int
    created_at: float
    started_at: float | None
    ended_at: float | None
    failure_reason: str | None


def transform_jobs(
    conn: sqlite3.Connection, model_names: list[str], limit: int = 20
) -> list[TransformJobRow]:
    """The newest jobs run with any of ``model_names`` (a job names a model, not an endpoint)."""
    if not model_names:
        return []
    marks = ", ".join("?" for _ in model_names)
    rows = conn.execute(
        "SELECT name, status, model_name, instance_type, instance_count, created_at, started_at, ended_at, "
        f"failure_reason FROM transform_jobs WHERE lower(model_name) IN ({marks}) "
        "ORDER BY created_at DESC LIMIT ?",
        [*(m.lower() for m in model_names), limit],
    ).fetchall()
    return [
        TransformJobRow(
            r["name"],
            r["status"],
            r["model_name"],
            r["instance_type"],
            r["instance_count"],
            r["created_at"],
            r["started_at"],
            r["ended_at"],
            r["failure_reason"],
        )
        for r in rows
    ]
