"""SageMaker's backlog metrics of asynchronous endpoints, per endpoint (dimension EndpointName).

- ApproximateBacklogSize: the endpoint's requests queued or being processed.
- ApproximateBacklogSizePerInstance: that divided by the endpoint's environments (coldbrew's
  instances). With no environment SageMaker would divide by zero; coldbrew reports the backlog
  itself, so a scaling rule on "backlog per instance" still sees the work waiting.
- ApproximateAgeOfOldestRequest: seconds since the oldest of those requests was received (0 when
  there is none).
- HasBacklogWithoutCapacity: 1 while there is a backlog and no environment, else 0.

An environment counts once it is ready (it has answered its ping): one still starting is not
capacity yet, as an instance is not before it is InService, so a cold start from zero shows as
HasBacklogWithoutCapacity 1 until its first environment can take a request.

The backlog is the dispatcher's, refreshed by its sweep every second; the environments are read
off the event loop from serving's containers (copies only, as the meter's sampling does). Every
asynchronous endpoint that serves is reported, an empty queue as 0s (SageMaker keeps publishing
them, which is what scaling in to zero reads), and so is any endpoint with a backlog that does not
serve right now (being created, or redeployed after a restart), with no environment.

``BacklogCollector`` serves them on ``GET /metrics`` at scrape time; ``BacklogSampler``, a thread
with its own connection to the metering database, samples them every
``COLDBREW_ASYNC_METRICS_INTERVAL_S`` into per-minute aggregates (``async_backlog_minutes``) that
the CloudWatch API reads (``coldbrew.metering.statistics``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coldbrew.async_inference.queue import Backlog
from coldbrew.serving.service import Serving

log = logging.getLogger("coldbrew.async")

READ_ATTEMPTS = 5
"""Reads of serving's containers tried before a sample is skipped (each fails only if the loop
changed them while they were copied)."""


@dataclass(frozen=True)
class BacklogReading:
    endpoint: str
    """Lower-cased, as the meter's EndpointName."""
    size: int
    oldest_age_s: float
    environments: int
    """Ready environments of the endpoint's variants."""

    @property
    def per_instance(self) -> float:
        return self.size / self.environments if self.environments else float(self.size)

    @property
    def without_capacity(self) -> int:
        return 1 if self.size > 0 and self.environments == 0 else 0

    def values(self) -> tuple[float, float, float, float]:
        """ApproximateBacklogSize, ...PerInstance, ApproximateAgeOfOldestRequest and
        HasBacklogWithoutCapacity."""
        return float(self.size), self.per_instance, self.oldest_age_s, float(self.without_capacity)


def readings(
    backlog: Mapping[str, Backlog], environments: Mapping[str, int], now: float
) -> list[BacklogReading]:
    """One per endpoint in ``environments`` (the asynchronous endpoints that serve, with their ready
    environments) or with a backlog, by endpoint name."""
    out = []
    for key in sorted(set(backlog) | set(environments)):
        b = backlog.get(key)
        size = b.size if b is not None else 0
        age = max(0.0, now - b.oldest_received_at) if b is not None and size else 0.0
        out.append(BacklogReading(key, size, age, environments.get(key, 0)))
    return out


def async_environments(serving: Serving) -> dict[str, int]:
    """Ready environments of each live asynchronous endpoint, by lower-cased name. Safe off the
    loop but for a RuntimeError when the loop changes a container while it is copied."""
    core = serving.pools.core
    out = {}
    for key, endpoint in list(serving.endpoints.items()):
        if endpoint.asynchronous is None:
            continue
        ready = 0
        for variant in list(endpoint.variants.values()):
            pool = core.pools.get(variant.pool)
            if pool is not None:
                ready += sum(1 for e in list(pool.envs.values()) if e.ready)
        out[key] = ready
    return out


class BacklogSource:
    """The readings as of now, from a backlog (the dispatcher's, by lower-cased endpoint name) and
    serving."""

    def __init__(
        self,
        backlog: Callable[[], Mapping[str, Backlog]],
        serving: Serving,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backlog = backlog
        self.serving = serving
        self.clock = clock

    def read(self) -> list[BacklogReading]:
        """Raises RuntimeError if serving's containers kept changing under every attempt."""
        for attempt in range(READ_ATTEMPTS):
            try:
                environments = async_environments(self.serving)
                break
            except RuntimeError:
                if attempt == READ_ATTEMPTS - 1:
                    raise
        return readings(self.backlog(), environments, self.clock())


# --- Prometheus ---------------------------------------------------------------------------------

_GAUGES = (
    ("ApproximateBacklogSize", "", "Requests queued or being processed (asynchronous endpoints)."),
    (
        "ApproximateBacklogSizePerInstance",
        "",
        "ApproximateBacklogSize divided by the endpoint's ready environments (the backlog itself when "
        "there are none).",
    ),
    ("ApproximateAgeOfOldestRequest", "seconds", "Age of the oldest request queued or being processed."),
    ("HasBacklogWithoutCapacity", "", "1 when requests wait and the endpoint has no ready environment."),
)


class BacklogCollector(Collector):
    """The backlog metrics as gauges ``sagemaker_<MetricName>`` labelled EndpointName, read at
    scrape time (ApproximateAgeOfOldestRequest as ``sagemaker_ApproximateAgeOfOldestRequest_seconds``)."""

    def __init__(self, source: BacklogSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        families = [
            GaugeMetricFamily(f"sagemaker_{name}", text, labels=["EndpointName"], unit=unit)
            for name, unit, text in _GAUGES
        ]
        try:
            found = self.source.read()
        except RuntimeError:
            found = []  # serving kept changing under the read: this scrape has no samples
        for reading in found:
            for family, value in zip(families, reading.values(), strict=True):
                family.add_metric([reading.endpoint], value)
        yield from families


# --- CloudWatch's per-minute aggregates -----------------------------------------------------------

_COLUMNS = ("backlog", "backlog_per_instance", "oldest_age_s", "without_capacity")
"""In the order of ``BacklogReading.values``; each has ``_sum``, ``_min`` and ``_max`` columns."""


def upsert_sql() -> str:
    names = [f"{c}_{s}" for c in _COLUMNS for s in ("sum", "min", "max")]
    updates = ["samples = samples + excluded.samples"]
    for c in _COLUMNS:
        updates += [
            f"{c}_sum = {c}_sum + excluded.{c}_sum",
            f"{c}_min = min(coalesce({c}_min, excluded.{c}_min), excluded.{c}_min)",
            f"{c}_max = max({c}_max, excluded.{c}_max)",
        ]
    return (
        f"INSERT INTO async_backlog_minutes (endpoint, minute, samples, {', '.join(names)}) "
        f"VALUES ({', '.join('?' * (3 + len(names)))}) "
        f"ON CONFLICT (endpoint, minute) DO UPDATE SET {', '.join(updates)}"
    )


def sample_rows(found: list[BacklogReading], now: float) -> list[tuple[object, ...]]:
    minute = int(now // 60 * 60)
    rows = []
    for reading in found:
        values = [v for value in reading.values() for v in (value, value, value)]
        rows.append((reading.endpoint, minute, 1, *values))
    return rows


class BacklogSampler:
    """Samples the readings every ``interval_s`` into ``async_backlog_minutes``, on a thread of its
    own with its own connection (the database is the metering one, migrated by the store)."""

    def __init__(
        self,
        db_path: Path,
        read: Callable[[], list[BacklogReading]],
        *,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.read = read
        self.interval_s = interval_s
        self.clock = clock
        self._conn = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # As the meter: a process crash loses nothing committed, a power loss at most a few samples.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._upsert = upsert_sql()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="coldbrew-async-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except RuntimeError:
                pass  # serving kept changing under the read: the next sample comes soon
            except Exception:  # a failed sample must never stop sampling for good
                log.exception("async: sampling the backlog metrics failed; retrying")

    def sample(self) -> int:
        """Take one sample and write it; returns how many endpoints it covered."""
        found = self.read()
        self.write(found, self.clock())
        return len(found)

    def write(self, found: list[BacklogReading], now: float) -> None:
        rows = sample_rows(found, now)
        if not rows:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(self._upsert, rows)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            self._conn.close()
