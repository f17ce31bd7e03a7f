"""Durable state in one SQLite file (WAL), with a versioned schema.

Each resource row keeps the request that created it as JSON, so DescribeX answers with exactly
what the user sent. One connection serves all threads behind a lock: control-plane calls are rare
and short, and the invoke path never comes here.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Each entry moves the schema one version up; never edit a released entry, append a new one.
MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE models (
        name_key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        arn TEXT NOT NULL,
        created_at REAL NOT NULL,
        spec TEXT NOT NULL
    );
    CREATE TABLE endpoint_configs (
        name_key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        arn TEXT NOT NULL,
        created_at REAL NOT NULL,
        spec TEXT NOT NULL
    );
    CREATE TABLE endpoints (
        name_key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        arn TEXT NOT NULL,
        created_at REAL NOT NULL,
        modified_at REAL NOT NULL,
        status TEXT NOT NULL,
        failure_reason TEXT,
        generation INTEGER NOT NULL DEFAULT 0,
        config_name TEXT NOT NULL,
        deployment TEXT NOT NULL,
        pending_config_name TEXT,
        pending_deployment TEXT,
        variants TEXT
    );
    CREATE TABLE tags (
        arn TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (arn, key)
    );
    CREATE INDEX endpoints_status ON endpoints (status);
    """,
    # 2: metering (coldbrew.metering). Raw records are pruned after a retention period; the
    # per-minute aggregates are kept for good and are updated in the same transaction as the
    # records they sum, so they stay exact across crashes.
    """
    CREATE TABLE meter_records (
        id INTEGER PRIMARY KEY,
        endpoint TEXT NOT NULL,
        variant TEXT NOT NULL,
        started_at REAL NOT NULL,
        model_latency_us INTEGER NOT NULL,
        overhead_latency_us INTEGER NOT NULL,
        cold_start INTEGER NOT NULL,
        setup_us INTEGER NOT NULL,
        memory_mb INTEGER NOT NULL,
        serverless INTEGER NOT NULL,
        bytes_in INTEGER NOT NULL,
        bytes_out INTEGER NOT NULL,
        status INTEGER NOT NULL,
        error_code TEXT
    );
    CREATE INDEX meter_records_time ON meter_records (started_at);
    CREATE INDEX meter_records_endpoint ON meter_records (endpoint, started_at);
    CREATE TABLE meter_minutes (
        endpoint TEXT NOT NULL,
        variant TEXT NOT NULL,
        minute INTEGER NOT NULL,
        serverless INTEGER NOT NULL DEFAULT 1,
        memory_mb INTEGER NOT NULL DEFAULT 0,
        invocations INTEGER NOT NULL DEFAULT 0,
        errors_4xx INTEGER NOT NULL DEFAULT 0,
        errors_5xx INTEGER NOT NULL DEFAULT 0,
        model_errors INTEGER NOT NULL DEFAULT 0,
        throttles INTEGER NOT NULL DEFAULT 0,
        cold_starts INTEGER NOT NULL DEFAULT 0,
        model_latency_us INTEGER NOT NULL DEFAULT 0,
        model_latency_max_us INTEGER NOT NULL DEFAULT 0,
        overhead_latency_us INTEGER NOT NULL DEFAULT 0,
        overhead_latency_max_us INTEGER NOT NULL DEFAULT 0,
        setup_us INTEGER NOT NULL DEFAULT 0,
        setup_max_us INTEGER NOT NULL DEFAULT 0,
        billed_mb_ms INTEGER NOT NULL DEFAULT 0,
        bytes_in INTEGER NOT NULL DEFAULT 0,
        bytes_out INTEGER NOT NULL DEFAULT 0,
        samples INTEGER NOT NULL DEFAULT 0,
        memory_utilization_sum REAL NOT NULL DEFAULT 0,
        memory_utilization_max REAL NOT NULL DEFAULT 0,
        concurrency_utilization_sum REAL NOT NULL DEFAULT 0,
        concurrency_utilization_max REAL NOT NULL DEFAULT 0,
        held_mb_s REAL NOT NULL DEFAULT 0,
        environment_starts INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (endpoint, variant, minute)
    );
    CREATE INDEX meter_minutes_time ON meter_minutes (minute);
    """,
    # 3: what CloudWatch's Minimum and percentiles need once raw records are pruned
    # (coldbrew.metering.aggregate.MinuteAggregate). Rows written before it have NULL minima and
    # histograms; their MemoryUtilization was averaged over every sample, so memory_samples = samples.
    """
    ALTER TABLE meter_minutes ADD COLUMN model_latency_min_us INTEGER;
    ALTER TABLE meter_minutes ADD COLUMN overhead_latency_min_us INTEGER;
    ALTER TABLE meter_minutes ADD COLUMN setup_min_us INTEGER;
    ALTER TABLE meter_minutes ADD COLUMN memory_utilization_min REAL;
    ALTER TABLE meter_minutes ADD COLUMN concurrency_utilization_min REAL;
    ALTER TABLE meter_minutes ADD COLUMN memory_samples INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE meter_minutes ADD COLUMN environments_sum INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE meter_minutes ADD COLUMN model_latency_hist BLOB;
    ALTER TABLE meter_minutes ADD COLUMN overhead_latency_hist BLOB;
    ALTER TABLE meter_minutes ADD COLUMN setup_hist BLOB;
    UPDATE meter_minutes SET memory_samples = samples;
    """,
    # 4: CPUUtilization of instance variants (coldbrew.metering.aggregate.MinuteAggregate). Rows
    # written before it have no CPU samples, so no CPUUtilization datapoints.
    """
    ALTER TABLE meter_minutes ADD COLUMN cpu_samples INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE meter_minutes ADD COLUMN cpu_utilization_sum REAL NOT NULL DEFAULT 0;
    ALTER TABLE meter_minutes ADD COLUMN cpu_utilization_max REAL NOT NULL DEFAULT 0;
    ALTER TABLE meter_minutes ADD COLUMN cpu_utilization_min REAL;
    """,
    # 5: the backlog metrics of asynchronous endpoints (coldbrew.async_inference.metrics): per
    # endpoint and minute, the samples taken of its queue and, per metric, their sum, min and max.
    """
    CREATE TABLE async_backlog_minutes (
        endpoint TEXT NOT NULL,
        minute INTEGER NOT NULL,
        samples INTEGER NOT NULL DEFAULT 0,
        backlog_sum REAL NOT NULL DEFAULT 0,
        backlog_min REAL,
        backlog_max REAL NOT NULL DEFAULT 0,
        backlog_per_instance_sum REAL NOT NULL DEFAULT 0,
        backlog_per_instance_min REAL,
        backlog_per_instance_max REAL NOT NULL DEFAULT 0,
        oldest_age_s_sum REAL NOT NULL DEFAULT 0,
        oldest_age_s_min REAL,
        oldest_age_s_max REAL NOT NULL DEFAULT 0,
        without_capacity_sum REAL NOT NULL DEFAULT 0,
        without_capacity_min REAL,
        without_capacity_max REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (endpoint, minute)
    );
    """,
    # 6: batch transform jobs (coldbrew.transform). A job row keeps its CreateTransformJob request;
    # transform_objects is its plan, one row per input object in input order, each marked done once
    # its output object is written, so a job resumed after a crash skips what is finished. Cost is
    # instance_count x (ended_at or now - started_at), priced as Batch Transform.
    """
    CREATE TABLE transform_jobs (
        name_key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        arn TEXT NOT NULL,
        created_at REAL NOT NULL,
        modified_at REAL NOT NULL,
        status TEXT NOT NULL,
        failure_reason TEXT,
        spec TEXT NOT NULL,
        model_name TEXT NOT NULL,
        instance_type TEXT NOT NULL,
        instance_count INTEGER NOT NULL,
        started_at REAL,
        ended_at REAL,
        stop_requested INTEGER NOT NULL DEFAULT 0,
        runs INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX transform_jobs_status ON transform_jobs (status);
    CREATE TABLE transform_objects (
        job TEXT NOT NULL,
        position INTEGER NOT NULL,
        input_key TEXT NOT NULL,
        output_key TEXT NOT NULL,
        done INTEGER NOT NULL DEFAULT 0,
        records INTEGER,
        PRIMARY KEY (job, position)
    );
    """,
    # 7: CloudFormation stacks (coldbrew.stacks). A stack row keeps its template, parameters, its
    # resources as deployed (JSON by logical ID) and, while an operation runs, that operation's
    # journal, so a server killed mid-operation rolls it back at its next start. Deleted stacks stay
    # (DELETE_COMPLETE) for DescribeStacks by stack ID. Events are appended, never changed.
    """
    CREATE TABLE stacks (
        stack_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        region TEXT NOT NULL,
        status TEXT NOT NULL,
        status_reason TEXT,
        created_at REAL NOT NULL,
        updated_at REAL,
        deleted_at REAL,
        description TEXT,
        template TEXT,
        parameters TEXT NOT NULL,
        tags TEXT NOT NULL,
        notification_arns TEXT NOT NULL,
        disable_rollback INTEGER NOT NULL DEFAULT 0,
        resources TEXT NOT NULL,
        outputs TEXT NOT NULL,
        operation TEXT
    );
    CREATE INDEX stacks_name ON stacks (name, deleted_at);
    CREATE TABLE stack_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        stack_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        timestamp REAL NOT NULL,
        logical_id TEXT NOT NULL,
        physical_id TEXT,
        resource_type TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        properties TEXT
    );
    CREATE INDEX stack_events_stack ON stack_events (stack_id, seq);
    CREATE TABLE change_sets (
        change_set_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        stack_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        status_reason TEXT,
        execution_status TEXT NOT NULL,
        description TEXT,
        template TEXT NOT NULL,
        parameters TEXT NOT NULL,
        tags TEXT NOT NULL,
        notification_arns TEXT NOT NULL,
        changes TEXT NOT NULL
    );
    CREATE INDEX change_sets_stack ON change_sets (stack_id, name);
    """,
    # 8: the Ray node that served an invocation (coldbrew.backends.ray); NULL on the local backend.
    """
    ALTER TABLE meter_records ADD COLUMN node TEXT;
    """,
    # 9: List operations' sort orders as indexes (coldbrew.control.paging sorts by the column, then
    # name_key), so a page is read off an index in order and ends at its LIMIT, instead of every
    # row being read and sorted for each page: 10,000 endpoints cost a full sort per ListEndpoints.
    # By Name the primary key already serves.
    """
    CREATE INDEX models_created ON models (created_at, name_key);
    CREATE INDEX endpoint_configs_created ON endpoint_configs (created_at, name_key);
    CREATE INDEX endpoints_created ON endpoints (created_at, name_key);
    CREATE INDEX endpoints_status_name ON endpoints (status, name_key);
    CREATE INDEX endpoints_status_created ON endpoints (status, created_at, name_key);
    """,
)


class Store:
    """A thread-safe handle on the SQLite database at ``path``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: an acknowledged CreateX must survive power loss, not only a process crash.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise RuntimeError(
                    f"{self.path} has schema version {version}, newer than this coldbrew "
                    f"({len(MIGRATIONS)}); upgrade coldbrew or use another --data-dir"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
