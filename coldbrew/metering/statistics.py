"""CloudWatch statistics of SageMaker's endpoint metrics, read from the meter's store.

Every statistic but the percentiles comes from the per-minute aggregates (``meter_minutes``), which
are exact sums, counts, minima and maxima kept for good. Percentiles are exact where the raw records
(``meter_records``, kept ``COLDBREW_METER_RETENTION_DAYS``) of a period are all still there, which is
checked, not assumed: a period's raw records are used only when their count equals the aggregates'
sample count. Otherwise (pruned, or more than ``RAW_PERCENTILE_LIMIT`` records in one request) a
latency percentile is read from the minutes' histograms, within 1% of the exact value
(``aggregate.HISTOGRAM_GROWTH``), and clamped to the period's exact minimum and maximum.

A percentile is the nearest rank: the smallest value with at least p% of the samples at or below it.

Which metrics exist, with SageMaker's names, units and variant kinds, is ``METRICS`` below. A metric
reads only the minutes of variants of its kind: SageMaker publishes ModelSetupTime and
ServerlessConcurrentExecutionsUtilization for serverless variants only, and InvocationsPerInstance,
InvocationModelErrors and CPUUtilization for instance variants only (its serverless list says it is
exhaustive).

The asynchronous endpoints' backlog metrics (ApproximateBacklogSize and the like) have the one
dimension EndpointName, as on SageMaker, and are read from ``async_backlog_minutes``: per-minute
aggregates of the samples ``coldbrew.async_inference.metrics.BacklogSampler`` takes of each queue.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from coldbrew.metering.aggregate import HISTOGRAM_DTYPE, histogram_value

SAGEMAKER = "AWS/SageMaker"
ENDPOINTS = "/aws/sagemaker/Endpoints"
DIMENSIONS = ("EndpointName", "VariantName")
ENDPOINT_DIMENSIONS = ("EndpointName",)

RAW_PERCENTILE_LIMIT = 1_000_000
"""Most raw records one request sorts for exact percentiles (SQLite sorts them, Python streams)."""

SERVERLESS, INSTANCE = 1, 0

_SERVED = "(invocations - errors_4xx - errors_5xx)"
_INSTANCES = (
    "(CASE WHEN samples > 0 AND environments_sum > 0 THEN environments_sum * 1.0 / samples ELSE 1.0 END)"
)
_ANSWERED = "((error_code IS NULL AND status < 400) OR error_code = 'ModelError')"


@dataclass(frozen=True)
class Metric:
    """One CloudWatch metric as SQL over a row of ``table`` (and ``meter_records`` rows)."""

    namespace: str
    name: str
    unit: str
    kinds: tuple[int, ...]
    """Values of the ``serverless`` column of the variants SageMaker publishes it for; empty: the
    table has no such column (the metric is the endpoint's, whatever its variants)."""
    count: str
    """The minute's sample count."""
    total: str
    """The sum of the minute's samples."""
    low: str
    """The minute's minimum (NULL if unknown)."""
    high: str
    raw: tuple[str, str] | None = None
    """(column, condition) of the samples in ``meter_records``: exact minima and percentiles."""
    histogram: str | None = None
    """Column of the minute's histogram of samples."""
    discrete: tuple[str, str, str, str] | None = None
    """(value a, count a, value b, count b): the minute's samples take at most two values, so its
    percentiles are exact from the aggregates alone."""

    table: str = "meter_minutes"
    """Its per-minute rows: keyed by ``endpoint``, ``variant`` (if a dimension) and ``minute``."""
    dimensions: tuple[str, ...] = DIMENSIONS
    """Exactly the dimensions it is published with: DIMENSIONS or ENDPOINT_DIMENSIONS."""

    @property
    def has_percentiles(self) -> bool:
        return self.discrete is not None or self.raw is not None

    @property
    def per_variant(self) -> bool:
        return "VariantName" in self.dimensions

    @property
    def key_columns(self) -> tuple[str, ...]:
        return ("endpoint", "variant") if self.per_variant else ("endpoint",)


def _errors(name: str, column: str, kinds: tuple[int, ...]) -> Metric:
    # SageMaker sends 1 for each such response and 0 for every other one.
    return Metric(
        SAGEMAKER,
        name,
        "None",
        kinds,
        count="invocations",
        total=column,
        low=f"(CASE WHEN {column} < invocations THEN 0.0 ELSE 1.0 END)",
        high=f"(CASE WHEN {column} > 0 THEN 1.0 ELSE 0.0 END)",
        discrete=("0.0", f"(invocations - {column})", "1.0", column),
    )


VARIANT_METRICS: tuple[Metric, ...] = (
    Metric(
        SAGEMAKER,
        "Invocations",
        "None",
        (SERVERLESS, INSTANCE),
        count="invocations",
        total="invocations",
        low="1.0",
        high="1.0",
        discrete=("1.0", "invocations", "0.0", "0"),
    ),
    Metric(
        SAGEMAKER,
        "InvocationsPerInstance",
        "None",
        (INSTANCE,),
        count="invocations",
        total=f"(invocations / {_INSTANCES})",
        low=f"(1.0 / {_INSTANCES})",
        high=f"(1.0 / {_INSTANCES})",
        discrete=(f"(1.0 / {_INSTANCES})", "invocations", "0.0", "0"),
    ),
    _errors("Invocation4XXErrors", "errors_4xx", (SERVERLESS, INSTANCE)),
    _errors("Invocation5XXErrors", "errors_5xx", (SERVERLESS, INSTANCE)),
    _errors("InvocationModelErrors", "model_errors", (INSTANCE,)),
    Metric(
        SAGEMAKER,
        "ModelLatency",
        "Microseconds",
        (SERVERLESS, INSTANCE),
        count=_SERVED,
        total="model_latency_us",
        low="model_latency_min_us",
        high="model_latency_max_us",
        raw=("model_latency_us", _ANSWERED),
        histogram="model_latency_hist",
    ),
    Metric(
        SAGEMAKER,
        "OverheadLatency",
        "Microseconds",
        (SERVERLESS, INSTANCE),
        count="invocations",
        total="overhead_latency_us",
        low="overhead_latency_min_us",
        high="overhead_latency_max_us",
        raw=("overhead_latency_us", "1"),
        histogram="overhead_latency_hist",
    ),
    Metric(
        SAGEMAKER,
        "ModelSetupTime",
        "Microseconds",
        (SERVERLESS,),
        count="cold_starts",
        total="setup_us",
        low="setup_min_us",
        high="setup_max_us",
        raw=("setup_us", "cold_start = 1"),
        histogram="setup_hist",
    ),
    Metric(
        SAGEMAKER,
        "ServerlessConcurrentExecutionsUtilization",
        "None",
        (SERVERLESS,),
        count="samples",
        total="concurrency_utilization_sum",
        low="concurrency_utilization_min",
        high="concurrency_utilization_max",
    ),
    Metric(
        ENDPOINTS,
        "MemoryUtilization",
        "Percent",
        (SERVERLESS, INSTANCE),
        count="memory_samples",
        total="memory_utilization_sum",
        low="memory_utilization_min",
        high="memory_utilization_max",
    ),
    Metric(
        ENDPOINTS,
        "CPUUtilization",
        "Percent",
        (INSTANCE,),
        count="cpu_samples",
        total="cpu_utilization_sum",
        low="cpu_utilization_min",
        high="cpu_utilization_max",
    ),
)


def _backlog(name: str, unit: str, column: str, discrete: bool = False) -> Metric:
    """A sampled metric of an asynchronous endpoint's queue (``async_backlog_minutes``)."""
    return Metric(
        SAGEMAKER,
        name,
        unit,
        (),
        count="samples",
        total=f"{column}_sum",
        low=f"{column}_min",
        high=f"{column}_max",
        # Samples of 0 or 1: how many of each is known, so percentiles are exact.
        discrete=("0.0", f"(samples - {column}_sum)", "1.0", f"{column}_sum") if discrete else None,
        table="async_backlog_minutes",
        dimensions=ENDPOINT_DIMENSIONS,
    )


ASYNC_METRICS: tuple[Metric, ...] = (
    # The backlog metrics of asynchronous endpoints (coldbrew.async_inference.metrics).
    _backlog("ApproximateBacklogSize", "None", "backlog"),
    _backlog("ApproximateBacklogSizePerInstance", "None", "backlog_per_instance"),
    _backlog("ApproximateAgeOfOldestRequest", "Seconds", "oldest_age_s"),
    _backlog("HasBacklogWithoutCapacity", "None", "without_capacity", discrete=True),
)
METRICS = VARIANT_METRICS + ASYNC_METRICS
BY_NAME: dict[tuple[str, str], Metric] = {(m.namespace, m.name): m for m in METRICS}
NAMESPACES = frozenset(m.namespace for m in METRICS)


@dataclass
class Datapoint:
    timestamp: int
    sample_count: float
    total: float
    minimum: float | None
    """None when some minute of the period predates minima and its raw records are gone."""
    maximum: float
    percentiles: dict[str, float] = field(default_factory=dict)
    """By the name asked for (``p99.9``); a percentile that cannot be known is left out."""

    @property
    def average(self) -> float:
        return self.total / self.sample_count


@dataclass(frozen=True)
class Percentile:
    name: str
    """As the client wrote it, e.g. ``p99.9``."""
    fraction: Fraction
    """Between 0 and 1."""

    def rank(self, n: int) -> int:
        """The 1-based nearest rank among ``n`` sorted samples."""
        return min(n, max(1, math.ceil(self.fraction * n)))


@dataclass(frozen=True)
class Series:
    """What to read: one metric of one variant (or, for a metric of the endpoint, of one endpoint),
    periods of ``period`` seconds from ``start``."""

    metric: Metric
    endpoint: str
    variant: str | None
    """None for a metric without the VariantName dimension."""
    start: int
    """Unix seconds, a whole minute."""
    end: int
    """Exclusive; a whole minute (the meter's resolution)."""
    period: int
    """A multiple of 60."""

    def where(self) -> tuple[str, list[object]]:
        clauses, params = _key_where(self.metric, self.endpoint, self.variant)
        return f"{clauses} AND minute >= ? AND minute < ?", [*params, self.start, self.end]


def _key_where(metric: Metric, endpoint: str, variant: str | None) -> tuple[str, list[object]]:
    """The condition on the metric's rows of one endpoint (and variant) and variant kind."""
    clauses: list[str] = ["endpoint = ?"]
    params: list[object] = [endpoint]
    if metric.per_variant:
        clauses.append("variant = ?")
        params.append(variant)
    if metric.kinds:
        clauses.append(f"serverless IN ({', '.join(str(k) for k in metric.kinds)})")
    return " AND ".join(clauses), params


def read(
    conn: sqlite3.Connection,
    series: Series,
    percentiles: Sequence[Percentile] = (),
    *,
    first: int = 0,
    last: int | None = None,
    descending: bool = False,
    limit: int | None = None,
) -> list[Datapoint]:
    """The series' datapoints with at least one sample, periods ``first`` to ``last`` (inclusive,
    by index from ``start``), in time order (or reversed), at most ``limit`` of them."""
    m = series.metric
    where, params = series.where()
    sql = (
        f"SELECT (minute - ?) / ? AS k, sum({m.count}) AS n, sum({m.total}) AS s, "
        f"min(CASE WHEN {m.count} > 0 THEN {m.low} END) AS lo, "
        f"max(CASE WHEN {m.count} > 0 THEN {m.high} END) AS hi, "
        f"sum(CASE WHEN {m.count} > 0 AND {m.low} IS NULL THEN 1 ELSE 0 END) AS lo_unknown "
        f"FROM {m.table} WHERE {where} AND minute >= ? AND minute < ? "
        f"GROUP BY k HAVING n > 0 ORDER BY k {'DESC' if descending else 'ASC'}"
    )
    lo_minute = series.start + first * series.period
    hi_minute = series.end if last is None else min(series.end, series.start + (last + 1) * series.period)
    args: list[object] = [series.start, series.period, *params, lo_minute, hi_minute]
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    points: dict[int, Datapoint] = {}
    unknown_minimum: set[int] = set()
    for k, n, s, lo, hi, lo_unknown in conn.execute(sql, args):
        points[k] = Datapoint(
            timestamp=series.start + k * series.period,
            sample_count=float(n),
            total=float(s),
            minimum=None if lo_unknown or lo is None else float(lo),
            maximum=float(hi),
        )
        if lo_unknown:
            unknown_minimum.add(k)
    if points and (percentiles or unknown_minimum):
        lo_minute = min(points) * series.period + series.start
        hi_minute = min(series.end, (max(points) + 1) * series.period + series.start)
        _fill(conn, series, points, percentiles, unknown_minimum, lo_minute, hi_minute)
    return list(points.values())


def _fill(
    conn: sqlite3.Connection,
    series: Series,
    points: dict[int, Datapoint],
    percentiles: Sequence[Percentile],
    unknown_minimum: set[int],
    lo_minute: int,
    hi_minute: int,
) -> None:
    m = series.metric
    if m.discrete is not None:
        _discrete(conn, series, points, percentiles, lo_minute, hi_minute)
        return
    if m.raw is None:
        return  # sampled utilisations: coldbrew keeps no per-sample values to rank
    exact = _raw(conn, series, points, percentiles, unknown_minimum, lo_minute, hi_minute)
    rest = {k: p for k, p in points.items() if k not in exact}
    if rest and percentiles and m.histogram is not None:
        _histograms(conn, series, rest, percentiles, lo_minute, hi_minute)


def _discrete(
    conn: sqlite3.Connection,
    series: Series,
    points: dict[int, Datapoint],
    percentiles: Sequence[Percentile],
    lo_minute: int,
    hi_minute: int,
) -> None:
    assert series.metric.discrete is not None
    va, ca, vb, cb = series.metric.discrete
    where, params = series.where()
    counts: dict[int, dict[float, int]] = {}
    rows = conn.execute(
        f"SELECT (minute - ?) / ? AS k, {va}, {ca}, {vb}, {cb} FROM {series.metric.table} "
        f"WHERE {where} AND minute >= ? AND minute < ?",
        [series.start, series.period, *params, lo_minute, hi_minute],
    )
    for k, a, na, b, nb in rows:
        if k in points:
            bucket = counts.setdefault(k, {})
            for value, n in ((a, na), (b, nb)):
                if n:
                    bucket[float(value)] = bucket.get(float(value), 0) + int(n)
    for k, bucket in counts.items():
        _rank_counts(points[k], sorted(bucket.items()), percentiles, None)


def _raw(
    conn: sqlite3.Connection,
    series: Series,
    points: dict[int, Datapoint],
    percentiles: Sequence[Percentile],
    unknown_minimum: set[int],
    lo_minute: int,
    hi_minute: int,
) -> set[int]:
    """Periods whose raw records are all there: their percentiles (and unknown minima) exactly."""
    assert series.metric.raw is not None
    column, condition = series.metric.raw
    kinds = ", ".join(str(k) for k in series.metric.kinds)
    where = (
        f"endpoint = ? AND variant = ? AND serverless IN ({kinds}) AND started_at >= ? "
        f"AND started_at < ? AND {condition}"
    )
    params: list[object] = [series.endpoint, series.variant, lo_minute, hi_minute]
    key = "CAST((started_at - ?) / ? AS INTEGER)"
    wanted = set(points) if percentiles else unknown_minimum
    complete: dict[int, int] = {}
    for k, n, low in conn.execute(
        f"SELECT {key} AS k, count(*), min({column}) FROM meter_records WHERE {where} GROUP BY k",
        [series.start, series.period, *params],
    ):
        point = points.get(k)
        if k in wanted and point is not None and n == point.sample_count:
            complete[k] = n
            if k in unknown_minimum:
                point.minimum = float(low)
    if not percentiles or not complete or sum(complete.values()) > RAW_PERCENTILE_LIMIT:
        return set(complete) if not percentiles else set()
    ranks = {k: sorted({p.rank(n) for p in percentiles}) for k, n in complete.items()}
    found: dict[int, dict[int, float]] = {k: {} for k in complete}
    current, index = None, 0
    for k, value in conn.execute(
        f"SELECT {key} AS k, {column} FROM meter_records WHERE {where} ORDER BY k, {column}",
        [series.start, series.period, *params],
    ):
        if k not in complete:
            continue
        if k != current:
            current, index = k, 0
        index += 1
        if index in ranks[k]:
            found[k][index] = float(value)
    for k, n in complete.items():
        points[k].percentiles.update({p.name: found[k][p.rank(n)] for p in percentiles})
    return set(complete)


def _histograms(
    conn: sqlite3.Connection,
    series: Series,
    points: dict[int, Datapoint],
    percentiles: Sequence[Percentile],
    lo_minute: int,
    hi_minute: int,
) -> None:
    """Percentiles from the minutes' histograms, merged per period with numpy (a week of minutes
    is some 10,000 histograms)."""
    m = series.metric
    where, params = series.where()
    rows = [
        (k, n, blob)
        for k, n, blob in conn.execute(
            f"SELECT (minute - ?) / ? AS k, {m.count}, {m.histogram} FROM {m.table} "
            f"WHERE {where} AND minute >= ? AND minute < ? AND {m.count} > 0",
            [series.start, series.period, *params, lo_minute, hi_minute],
        )
        if k in points
    ]
    if not rows:
        return
    size = HISTOGRAM_DTYPE.itemsize
    blobs = [blob if blob and len(blob) % size == 0 else b"" for _, _, blob in rows]
    pairs = np.frombuffer(b"".join(blobs), dtype=HISTOGRAM_DTYPE)
    ks = np.array([k for k, _, _ in rows], dtype=np.int64)
    row_of = np.repeat(np.arange(len(rows)), [len(b) // size for b in blobs])
    counted = np.bincount(row_of, weights=pairs["count"], minlength=len(rows))
    # A minute whose histogram does not hold all its samples was written before histograms were
    # kept: its period's percentiles cannot be known.
    incomplete = set(ks[counted != np.array([n for _, n, _ in rows])].tolist())
    period_of = ks[row_of]
    keep = ~np.isin(period_of, list(incomplete))
    key = period_of[keep] * 65536 + pairs["bucket"][keep]
    if not key.size:
        return
    keys, index = np.unique(key, return_inverse=True)
    sums = np.bincount(index, weights=pairs["count"][keep])
    periods = keys // 65536
    bounds = np.flatnonzero(np.diff(periods)) + 1
    for chunk_keys, chunk_sums in zip(np.split(keys, bounds), np.split(sums, bounds), strict=True):
        point = points[int(chunk_keys[0] // 65536)]
        running = np.cumsum(chunk_sums)
        n = int(point.sample_count)
        for p in percentiles:
            bucket = int(chunk_keys[min(len(running) - 1, int(np.searchsorted(running, p.rank(n))))] % 65536)
            value = histogram_value(bucket)
            if point.minimum is not None:
                value = max(point.minimum, value)
            point.percentiles[p.name] = min(point.maximum, value)


def _rank_counts(
    point: Datapoint,
    values: Iterable[tuple[float, int]],
    percentiles: Sequence[Percentile],
    clamp: tuple[float | None, float] | None,
) -> None:
    """Percentiles of samples given as (value, how many) in increasing value order."""
    n = int(point.sample_count)
    wanted = sorted((p.rank(n), p.name) for p in percentiles)
    seen, i = 0, 0
    for value, count in values:
        seen += count
        while i < len(wanted) and wanted[i][0] <= seen:
            v = value
            if clamp is not None:
                low, high = clamp
                v = min(high, v if low is None else max(low, v))
            point.percentiles[wanted[i][1]] = v
            i += 1
        if i == len(wanted):
            break


# --- ListMetrics ------------------------------------------------------------------------------------


def active(conn: sqlite3.Connection, since: int) -> list[tuple[Metric, str, str | None]]:
    """(metric, endpoint, variant) with at least one sample since ``since`` (Unix seconds); variant
    None for the metrics of an endpoint.

    Keys (variants, or endpoints) are found by skipping along each table's primary key, one lookup
    each, and each metric by the first minute since ``since`` with a sample, so the cost grows with
    variants and endpoints, not minutes.
    """
    found: list[tuple[Metric, str, str | None]] = []
    tables: dict[tuple[str, tuple[str, ...]], list[Metric]] = {}
    for m in METRICS:
        tables.setdefault((m.table, m.key_columns), []).append(m)
    for (table, columns), metrics in tables.items():
        for key in _keys(conn, table, columns):
            endpoint, variant = key[0], key[1] if len(key) > 1 else None
            for m in metrics:
                where, params = _key_where(m, endpoint, variant)
                hit = conn.execute(
                    f"SELECT 1 FROM {table} WHERE {where} AND minute >= ? AND {m.count} > 0 LIMIT 1",
                    [*params, since],
                ).fetchone()
                if hit is not None:
                    found.append((m, endpoint, variant))
    found.sort(key=lambda t: (t[0].namespace, t[0].name, t[1], t[2] or ""))
    return found


def _keys(conn: sqlite3.Connection, table: str, columns: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """The distinct values of ``columns`` (a prefix of the table's primary key), in order."""
    names = ", ".join(columns)
    row = conn.execute(f"SELECT {names} FROM {table} ORDER BY {names} LIMIT 1").fetchone()
    while row is not None:
        yield tuple(row)
        row = conn.execute(
            f"SELECT {names} FROM {table} WHERE ({names}) > ({', '.join('?' * len(columns))}) "
            f"ORDER BY {names} LIMIT 1",
            list(row),
        ).fetchone()
