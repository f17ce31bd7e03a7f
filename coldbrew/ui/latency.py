"""Every variant's counts and ModelLatency percentiles over one window, in a handful of queries.

:func:`coldbrew.metering.statistics.read` answers one series at a time (three queries each); the
endpoints page needs one period of one metric for every variant, so this reads them all at once
with the same rules, and gives the same numbers (``tests/ui/test_latency.py`` checks it against
``read``):

- counts, minimum and maximum from the per-minute aggregates;
- a percentile is exact (nearest rank over the raw records) for a variant whose raw records in the
  window are all still there, checked by their count;
- otherwise from the minutes' histograms, within 1%, clamped to the exact minimum and maximum, and
  unknown if a minute predates histograms.

One difference, for speed: raw records are ranked only while the window holds at most
``RAW_LIMIT`` of them over all variants (about 50 ms of sorting); past that every percentile comes
from the histograms, as CloudWatch's own answer does past its per-series limit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from coldbrew.metering.aggregate import HISTOGRAM_DTYPE, histogram_value
from coldbrew.metering.statistics import BY_NAME, RAW_PERCENTILE_LIMIT, SAGEMAKER, Percentile

RAW_LIMIT = 50_000

Key = tuple[str, str]


@dataclass
class VariantWindow:
    """One variant's window: what CloudWatch sums, and ModelLatency's percentiles."""

    endpoint: str
    variant: str
    serverless: bool
    invocations: int
    errors_4xx: int
    errors_5xx: int
    cold_starts: int
    """ModelSetupTime's SampleCount: counted for serverless variants only, as SageMaker publishes it."""
    served: int
    """ModelLatency's SampleCount (invocations answered by the model)."""
    minimum: float | None
    maximum: float | None
    percentiles: dict[str, float] = field(default_factory=dict)
    """By name (``p50``); one that cannot be known is left out."""


def read_window(
    conn: sqlite3.Connection,
    start: int,
    end: int,
    percentiles: Sequence[Percentile],
    raw_limit: int = RAW_LIMIT,
) -> list[VariantWindow]:
    """Every variant with invocations in [start, end) (whole minutes), as one CloudWatch period."""
    metric = BY_NAME[(SAGEMAKER, "ModelLatency")]
    kinds = ", ".join(str(k) for k in metric.kinds)
    rows = conn.execute(
        f"SELECT endpoint, variant, max(serverless), sum(invocations), sum(errors_4xx), sum(errors_5xx), "
        f"sum(CASE WHEN serverless = 1 THEN cold_starts ELSE 0 END), "
        f"sum(CASE WHEN serverless IN ({kinds}) THEN {metric.count} ELSE 0 END) AS n, "
        f"min(CASE WHEN serverless IN ({kinds}) AND {metric.count} > 0 THEN {metric.low} END), "
        f"max(CASE WHEN serverless IN ({kinds}) AND {metric.count} > 0 THEN {metric.high} END), "
        f"sum(CASE WHEN serverless IN ({kinds}) AND {metric.count} > 0 AND {metric.low} IS NULL "
        f"THEN 1 ELSE 0 END) "
        f"FROM meter_minutes WHERE minute >= ? AND minute < ? GROUP BY endpoint, variant "
        f"HAVING sum(invocations) > 0",
        [start, end],
    ).fetchall()
    found: dict[Key, VariantWindow] = {}
    unknown_minimum: set[Key] = set()
    for endpoint, variant, serverless, inv, e4, e5, cold, n, low, high, low_unknown in rows:
        found[(endpoint, variant)] = VariantWindow(
            endpoint, variant, bool(serverless), int(inv), int(e4), int(e5), int(cold), int(n or 0),
            None if low_unknown or low is None else float(low), None if high is None else float(high),
        )  # fmt: skip
        if low_unknown:
            unknown_minimum.add((endpoint, variant))
    latency = {k: w for k, w in found.items() if w.served > 0}
    if not latency or not percentiles:
        return list(found.values())
    exact: set[Key] = set()
    if sum(w.served for w in latency.values()) <= raw_limit:
        exact = _raw(conn, latency, percentiles, unknown_minimum, start, end)
    rest = {k: w for k, w in latency.items() if k not in exact}
    if rest:
        _histograms(conn, rest, percentiles, start, end)
    return list(found.values())


def _raw(
    conn: sqlite3.Connection,
    windows: dict[Key, VariantWindow],
    percentiles: Sequence[Percentile],
    unknown_minimum: set[Key],
    start: int,
    end: int,
) -> set[Key]:
    metric = BY_NAME[(SAGEMAKER, "ModelLatency")]
    assert metric.raw is not None
    column, condition = metric.raw
    kinds = ", ".join(str(k) for k in metric.kinds)
    where = f"serverless IN ({kinds}) AND started_at >= ? AND started_at < ? AND {condition}"
    complete: dict[Key, int] = {}
    for endpoint, variant, n, low in conn.execute(
        f"SELECT endpoint, variant, count(*), min({column}) FROM meter_records WHERE {where} "
        f"GROUP BY endpoint, variant",
        [start, end],
    ):
        window = windows.get((endpoint, variant))
        if window is None or n != window.served:
            continue
        if (endpoint, variant) in unknown_minimum:
            window.minimum = float(low)
        if n <= RAW_PERCENTILE_LIMIT:  # as read(): past it, one series' ranks come from histograms
            complete[(endpoint, variant)] = n
    if not complete:
        return set()
    names: dict[Key, dict[int, list[str]]] = {}
    for k, n in complete.items():
        by_rank: dict[int, list[str]] = {}
        for p in percentiles:
            by_rank.setdefault(p.rank(n), []).append(p.name)
        names[k] = by_rank
    current: Key | None = None
    index = 0
    wanted: dict[int, list[str]] = {}
    for endpoint, variant, value in conn.execute(
        f"SELECT endpoint, variant, {column} FROM meter_records WHERE {where} "
        f"ORDER BY endpoint, variant, {column}",
        [start, end],
    ):
        key = (endpoint, variant)
        if key != current:
            current, index = key, 0
            wanted = names.get(key, {})
        index += 1
        for name in wanted.get(index, ()):
            windows[key].percentiles[name] = float(value)
    return set(complete)


def _histograms(
    conn: sqlite3.Connection,
    windows: dict[Key, VariantWindow],
    percentiles: Sequence[Percentile],
    start: int,
    end: int,
) -> None:
    """Every variant's minutes merged at once: one dense (variant x bucket used) count matrix, so
    the work grows with the histograms' pairs, not with variants times a sort."""
    metric = BY_NAME[(SAGEMAKER, "ModelLatency")]
    kinds = ", ".join(str(k) for k in metric.kinds)
    order = {k: i for i, k in enumerate(windows)}
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: tens of thousands of rows
    owners_list, counts_list, blobs = [], [], []
    size = HISTOGRAM_DTYPE.itemsize
    for endpoint, variant, n, blob in cursor.execute(
        f"SELECT endpoint, variant, {metric.count}, {metric.histogram} FROM meter_minutes "
        f"WHERE serverless IN ({kinds}) AND minute >= ? AND minute < ? AND {metric.count} > 0",
        [start, end],
    ):
        owner = order.get((endpoint, variant))
        if owner is not None:
            owners_list.append(owner)
            counts_list.append(n)
            blobs.append(blob if blob and len(blob) % size == 0 else b"")
    if not blobs:
        return
    pairs = np.frombuffer(b"".join(blobs), dtype=HISTOGRAM_DTYPE)
    owners = np.array(owners_list, dtype=np.int64)
    row_of = np.repeat(np.arange(len(blobs)), [len(b) // size for b in blobs])
    counted = np.bincount(row_of, weights=pairs["count"], minlength=len(blobs))
    # A minute whose histogram does not hold all its samples predates histograms: that variant's
    # percentiles cannot be known.
    bad = np.zeros(len(windows), dtype=bool)
    bad[owners[counted != np.array(counts_list)]] = True
    owner_of = owners[row_of]
    buckets = pairs["bucket"].astype(np.int64)
    used = np.flatnonzero(np.bincount(buckets, minlength=65536))
    column = np.zeros(65536, dtype=np.int64)
    column[used] = np.arange(used.size)
    width = used.size
    matrix = np.bincount(
        owner_of * width + column[buckets], weights=pairs["count"], minlength=len(windows) * width
    ).reshape(len(windows), width)
    running = np.cumsum(matrix, axis=1)
    by_index = list(windows.values())
    served = np.array([w.served for w in by_index])
    for p in percentiles:
        ranks = np.array([p.rank(int(n)) for n in served])
        # The first bucket whose running count reaches the rank (nearest rank).
        found = np.minimum((running < ranks[:, None]).sum(axis=1), width - 1)
        for i, window in enumerate(by_index):
            if bad[i] or running[i, -1] == 0:
                continue
            value = histogram_value(int(used[found[i]]))
            if window.minimum is not None:
                value = max(window.minimum, value)
            if window.maximum is not None:
                value = min(window.maximum, value)
            window.percentiles[p.name] = value
