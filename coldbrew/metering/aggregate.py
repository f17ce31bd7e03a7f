"""Per-minute aggregates of meter records and samples, and cumulative totals for Prometheus.

Both are computed by the meter's writer thread from the batch it flushes, never on the hot path.
"""

from __future__ import annotations

import bisect
import math
import sqlite3
from dataclasses import dataclass, field, fields

import numpy as np

from coldbrew.metering.records import MeterRecord, Outcome

# CloudWatch reports latencies in microseconds; buckets from 1 ms to the 60 s invocation limit.
LATENCY_BUCKETS_US: tuple[float, ...] = (
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
)

Key = tuple[str, str]
"""(endpoint, variant)."""

# Per-minute latency histograms, kept with the aggregates so percentiles stay available after raw
# records are pruned: log-spaced buckets, bucket i >= 1 holding [GROWTH**(i-1), GROWTH**i) us and
# bucket 0 holding 0. A value read back as its bucket's geometric middle is within 1% of the truth.
# Stored as a BLOB of (bucket, count) pairs (HISTOGRAM_DTYPE), which numpy reads without parsing.
HISTOGRAM_GROWTH = 1.02
_LOG_GROWTH = math.log(HISTOGRAM_GROWTH)


HISTOGRAM_DTYPE = np.dtype([("bucket", "<u2"), ("count", "<u4")])
"""A stored histogram: (bucket, count) pairs, little-endian, in increasing bucket order."""
_LAST_BUCKET = 65535


def histogram_bucket(value_us: float) -> int:
    if value_us < 1:
        return 0
    return min(_LAST_BUCKET, 1 + int(math.log(value_us) / _LOG_GROWTH))


def histogram_value(bucket: int) -> float:
    """The value a bucket stands for: the geometric middle of its bounds."""
    if bucket <= 0:
        return 0.0
    return float(HISTOGRAM_GROWTH ** (bucket - 0.5))


def histogram_dumps(counts: dict[int, int]) -> bytes | None:
    if not counts:
        return None
    return np.array(sorted(counts.items()), dtype=HISTOGRAM_DTYPE).tobytes()


def histogram_array(blob: bytes | None) -> np.ndarray:
    if not blob or len(blob) % HISTOGRAM_DTYPE.itemsize:
        return np.zeros(0, dtype=HISTOGRAM_DTYPE)
    return np.frombuffer(blob, dtype=HISTOGRAM_DTYPE)


def histogram_loads(blob: bytes | None) -> dict[int, int]:
    pairs = histogram_array(blob)
    return dict(zip(pairs["bucket"].tolist(), pairs["count"].tolist(), strict=True))


def _histogram_add(a: bytes | None, b: bytes | None) -> bytes | None:
    if not a:
        return b
    if not b:
        return a
    both = np.concatenate([histogram_array(a), histogram_array(b)])
    buckets, index = np.unique(both["bucket"], return_inverse=True)
    out = np.zeros(len(buckets), dtype=HISTOGRAM_DTYPE)
    out["bucket"] = buckets
    out["count"] = np.bincount(index, weights=both["count"]).astype(np.uint32)
    return out.tobytes()


def register_sql_functions(conn: sqlite3.Connection) -> None:
    """What ``upsert_sql`` needs on the connection that runs it."""
    conn.create_function("coldbrew_histogram_add", 2, _histogram_add, deterministic=True)


def _low(current: float | None, value: float) -> float:
    return value if current is None else min(current, value)


@dataclass
class MinuteAggregate:
    """One row of ``meter_minutes``: sums and maxima, so any longer period is a sum of minutes."""

    serverless: int = 1
    memory_mb: int = 0
    invocations: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    model_errors: int = 0
    throttles: int = 0
    cold_starts: int = 0
    model_latency_us: int = 0
    model_latency_max_us: int = 0
    overhead_latency_us: int = 0
    overhead_latency_max_us: int = 0
    setup_us: int = 0
    setup_max_us: int = 0
    billed_mb_ms: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    samples: int = 0
    memory_utilization_sum: float = 0.0
    memory_utilization_max: float = 0.0
    concurrency_utilization_sum: float = 0.0
    concurrency_utilization_max: float = 0.0
    held_mb_s: float = 0.0
    environment_starts: int = 0
    """Environments first seen in this minute's samples (each cold start, hedged or not)."""
    # Schema version 3: what CloudWatch's Minimum and percentiles need, and the sample counts
    # MemoryUtilization and InvocationsPerInstance are averaged over. A minimum is None (NULL) when
    # the minute has no such sample, or was written before version 3.
    model_latency_min_us: int | None = None
    """Over answered invocations (OK or ModelError), as ModelLatency's sums and maxima."""
    overhead_latency_min_us: int | None = None
    """Over every metered invocation, as OverheadLatency's sums and maxima."""
    setup_min_us: int | None = None
    memory_utilization_min: float | None = None
    concurrency_utilization_min: float | None = None
    memory_samples: int = 0
    """Samples in which the variant held an environment (an empty variant uses no memory)."""
    environments_sum: int = 0
    """Environments summed over samples: divided by ``samples``, the minute's mean instance count."""
    model_latency_hist: dict[int, int] = field(default_factory=dict)
    overhead_latency_hist: dict[int, int] = field(default_factory=dict)
    setup_hist: dict[int, int] = field(default_factory=dict)
    # Schema version 4: CPUUtilization, of instance variants only (``VariantSample.cpu_utilization``).
    cpu_samples: int = 0
    """Samples with a CPU reading (an environment seen in the previous sample too)."""
    cpu_utilization_sum: float = 0.0
    cpu_utilization_max: float = 0.0
    cpu_utilization_min: float | None = None

    def row(self) -> tuple[object, ...]:
        """The values of ``AGGREGATE_COLUMNS``, as stored."""
        return tuple(
            histogram_dumps(value) if isinstance(value, dict) else value for value in vars(self).values()
        )

    def add_record(self, r: MeterRecord) -> None:
        self.serverless = int(r.serverless)
        self.memory_mb = r.memory_mb
        self.invocations += 1
        outcome = r.outcome
        if outcome is Outcome.CLIENT_ERROR:
            self.errors_4xx += 1
        elif outcome is Outcome.SERVER_ERROR:
            self.errors_5xx += 1
        elif outcome is Outcome.MODEL_ERROR:
            self.model_errors += 1
        if r.error_code == "ThrottlingException":
            self.throttles += 1
        if r.cold_start:
            self.cold_starts += 1
            self.setup_us += r.setup_us
            self.setup_max_us = max(self.setup_max_us, r.setup_us)
            self.setup_min_us = int(_low(self.setup_min_us, r.setup_us))
            _observe(self.setup_hist, r.setup_us)
        if outcome is Outcome.OK or outcome is Outcome.MODEL_ERROR:
            # A refused request never reached a model (its model latency is 0 and not a sample).
            self.model_latency_min_us = int(_low(self.model_latency_min_us, r.model_latency_us))
            _observe(self.model_latency_hist, r.model_latency_us)
        self.overhead_latency_min_us = int(_low(self.overhead_latency_min_us, r.overhead_latency_us))
        _observe(self.overhead_latency_hist, r.overhead_latency_us)
        self.model_latency_us += r.model_latency_us
        self.model_latency_max_us = max(self.model_latency_max_us, r.model_latency_us)
        self.overhead_latency_us += r.overhead_latency_us
        self.overhead_latency_max_us = max(self.overhead_latency_max_us, r.overhead_latency_us)
        self.billed_mb_ms += r.billed_mb_ms
        self.bytes_in += r.bytes_in
        self.bytes_out += r.bytes_out

    def add_idle_samples(self, serverless: bool, memory_mb: int, count: int) -> None:
        """``count`` samples of the variant holding no environment: the same as ``add_sample`` of
        as many samples with zero environments (the meter counts those instead of keeping them)."""
        if count <= 0:
            return
        self.serverless = int(serverless)
        self.memory_mb = memory_mb
        self.samples += count
        self.memory_utilization_max = max(self.memory_utilization_max, 0.0)
        self.concurrency_utilization_max = max(self.concurrency_utilization_max, 0.0)
        self.concurrency_utilization_min = _low(self.concurrency_utilization_min, 0.0)

    def add_sample(self, sample: VariantSample, seconds: float) -> None:
        self.serverless = int(sample.serverless)
        self.memory_mb = sample.memory_mb
        self.samples += 1
        self.memory_utilization_sum += sample.memory_utilization
        self.memory_utilization_max = max(self.memory_utilization_max, sample.memory_utilization)
        self.concurrency_utilization_sum += sample.concurrency_utilization
        self.concurrency_utilization_max = max(
            self.concurrency_utilization_max, sample.concurrency_utilization
        )
        self.held_mb_s += sample.held_mb * seconds
        self.environment_starts += sample.new_environments
        self.concurrency_utilization_min = _low(
            self.concurrency_utilization_min, sample.concurrency_utilization
        )
        self.environments_sum += sample.environments
        if sample.environments > 0:
            self.memory_samples += 1
            self.memory_utilization_min = _low(self.memory_utilization_min, sample.memory_utilization)
        if sample.cpu_utilization is not None:
            self.cpu_samples += 1
            self.cpu_utilization_sum += sample.cpu_utilization
            self.cpu_utilization_max = max(self.cpu_utilization_max, sample.cpu_utilization)
            self.cpu_utilization_min = _low(self.cpu_utilization_min, sample.cpu_utilization)


def _observe(histogram: dict[int, int], value: float) -> None:
    bucket = histogram_bucket(value)
    histogram[bucket] = histogram.get(bucket, 0) + 1


AGGREGATE_COLUMNS = tuple(f.name for f in fields(MinuteAggregate))
_MAX_COLUMNS = {c for c in AGGREGATE_COLUMNS if c.endswith(("_max", "_max_us"))}
_MIN_COLUMNS = {c for c in AGGREGATE_COLUMNS if c.endswith(("_min", "_min_us"))}
_HISTOGRAM_COLUMNS = {c for c in AGGREGATE_COLUMNS if c.endswith("_hist")}
_LAST_COLUMNS = {"serverless", "memory_mb"}


def upsert_sql() -> str:
    """Adds a batch's aggregate to a minute's row: sums add, maxima take the larger, minima the
    smaller, histograms add bucket by bucket (``register_sql_functions`` on the connection)."""
    updates = []
    for column in AGGREGATE_COLUMNS:
        if column in _LAST_COLUMNS:
            updates.append(f"{column} = excluded.{column}")
        elif column in _MAX_COLUMNS:
            updates.append(f"{column} = max({column}, excluded.{column})")
        elif column in _MIN_COLUMNS:
            # SQLite's min() of a NULL is NULL: a minimum only one side knows is that side's.
            updates.append(
                f"{column} = coalesce(min({column}, excluded.{column}), {column}, excluded.{column})"
            )
        elif column in _HISTOGRAM_COLUMNS:
            updates.append(f"{column} = coldbrew_histogram_add({column}, excluded.{column})")
        else:
            updates.append(f"{column} = {column} + excluded.{column}")
    columns = ", ".join(("endpoint", "variant", "minute") + AGGREGATE_COLUMNS)
    marks = ", ".join("?" * (3 + len(AGGREGATE_COLUMNS)))
    return (
        f"INSERT INTO meter_minutes ({columns}) VALUES ({marks}) "
        f"ON CONFLICT (endpoint, variant, minute) DO UPDATE SET {', '.join(updates)}"
    )


@dataclass(frozen=True)
class VariantSample:
    """What a variant's environments hold at one instant (from ``Serving.environment_snapshot``)."""

    endpoint: str
    variant: str
    serverless: bool
    memory_mb: int
    max_concurrency: int
    environments: int
    in_flight: int
    rss_bytes: int
    held_mb: int
    """Memory size summed over the environments that exist (what scale-to-zero saves)."""
    new_environments: int = 0
    """Environments not seen in the previous sample."""
    cpu_utilization: float | None = None
    """Percent, summed over the environments (100 per busy core, as SageMaker's CPUUtilization):
    None when none was read in both this sample and the previous one, or for a serverless variant."""

    @property
    def memory_utilization(self) -> float:
        """Percent of the memory the variant's environments may use that they do use."""
        if self.held_mb <= 0:
            return 0.0
        return 100.0 * self.rss_bytes / (self.held_mb * 1024 * 1024)

    @property
    def concurrency_utilization(self) -> float:
        """Concurrent executions over MaxConcurrency (CloudWatch unit: None, a ratio)."""
        if not self.serverless or self.max_concurrency <= 0:
            return 0.0
        return self.in_flight / self.max_concurrency


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_US) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_US, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        running, out = 0, []
        for bound, count in zip((*LATENCY_BUCKETS_US, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
        return out


@dataclass
class VariantTotals:
    """Cumulative figures since the server started, as Prometheus counters and histograms want them."""

    invocations: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    model_errors: int = 0
    cold_starts: int = 0
    billed_mb_ms: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    model_latency: Histogram = field(default_factory=Histogram)
    overhead_latency: Histogram = field(default_factory=Histogram)
    setup_time: Histogram = field(default_factory=Histogram)
    memory_utilization: float = 0.0
    concurrency_utilization: float = 0.0
    environments: int = 0
    environment_starts: int = 0

    def add_record(self, r: MeterRecord) -> None:
        self.invocations += 1
        outcome = r.outcome
        self.errors_4xx += outcome is Outcome.CLIENT_ERROR
        self.errors_5xx += outcome is Outcome.SERVER_ERROR
        self.model_errors += outcome is Outcome.MODEL_ERROR
        self.billed_mb_ms += r.billed_mb_ms
        self.bytes_in += r.bytes_in
        self.bytes_out += r.bytes_out
        if outcome is Outcome.OK or outcome is Outcome.MODEL_ERROR:
            # Refused requests never reached a model: they have no latency to report.
            self.model_latency.observe(r.model_latency_us)
            self.overhead_latency.observe(r.overhead_latency_us)
        if r.cold_start:
            self.cold_starts += 1
            self.setup_time.observe(r.setup_us)
