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

import math
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from coldbrew.metering.aggregate import histogram_value
from coldbrew.metering.statistics import BY_NAME, RAW_PERCENTILE_LIMIT, SAGEMAKER, Percentile
from coldbrew.metering.written import MinuteLog
from coldbrew.ui.minutes import Block, Key, MinuteCache, Span

RAW_LIMIT = 50_000


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
    minutes: MinuteCache | None = None,
    memo: HistogramMemo | None = None,
) -> list[VariantWindow]:
    """Every variant with invocations in [start, end) (whole minutes), as one CloudWatch period.
    ``minutes``: the page's cache of the meter's minutes (without one, they are all read now);
    ``memo``: the older minutes' histograms merged at the load before."""
    minutes = minutes or MinuteCache(MinuteLog())
    span = minutes.span(conn, start, end)
    found: dict[Key, VariantWindow] = {}
    unknown_minimum: set[Key] = set()
    counts, low, high = span.counts.tolist(), span.low.tolist(), span.high.tolist()
    for i, (endpoint, variant) in enumerate(span.keys):
        inv, e4, e5, cold, n, low_unknown = counts[i]
        if inv <= 0:  # as CloudWatch: a variant with no invocations in the period has no datapoint
            continue
        found[(endpoint, variant)] = VariantWindow(
            endpoint, variant, bool(span.serverless[i]), inv, e4, e5, cold, n,
            None if low_unknown or math.isnan(low[i]) else low[i], None if math.isnan(high[i]) else high[i],
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
        _histograms(span, rest, percentiles, memo or HistogramMemo())
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


TAIL = 3
"""The newest minutes of a window, added to the older ones' merged histograms on each load."""


@dataclass
class _Merged:
    """The older minutes' histograms merged per key: (cache key x bucket lo..lo+width) counts."""

    blocks: tuple[Block, ...]
    """Held (not their ids): a freed block's id could be a new one's."""
    lo: int
    matrix: np.ndarray


class HistogramMemo:
    """Keeps a window's older minutes merged between loads: they change only when the meter writes
    one again (then the :class:`MinuteCache` gives a new block) or the window moves a minute."""

    def __init__(self) -> None:
        self._merged: _Merged | None = None
        self._lock = threading.Lock()

    def merged(self, blocks: Sequence[Block], keys: int, extra: Sequence[Block]) -> _Merged:
        """``blocks`` merged, over a bucket range that also holds ``extra``'s buckets."""
        with self._lock:
            found = self._merged
            same = found is not None and len(found.blocks) == len(blocks)
            same = same and all(a is b for a, b in zip(found.blocks, blocks, strict=False))  # type: ignore[union-attr]
            if found is not None and same and found.matrix.shape[0] >= keys:
                width = found.matrix.shape[1]
                if all(b.hist_bucket.size == 0 or (b.hist_bucket.min() >= found.lo and
                       b.hist_bucket.max() < found.lo + width) for b in extra):  # fmt: skip
                    return found
            buckets = np.concatenate([b.hist_bucket for b in (*blocks, *extra)] + [np.zeros(1, np.int64)])
            used = buckets[1:] if buckets.size > 1 else buckets
            lo, hi = int(used.min()), int(used.max())
            width = hi - lo + 1
            key = np.concatenate([b.hist_key for b in blocks] + [np.zeros(0, np.int64)])
            bucket = np.concatenate([b.hist_bucket for b in blocks] + [np.zeros(0, np.int64)])
            count = np.concatenate([b.hist_count for b in blocks] + [np.zeros(0, np.int64)])
            matrix = np.bincount(key * width + bucket - lo, weights=count, minlength=keys * width)
            self._merged = _Merged(tuple(blocks), lo, matrix.reshape(keys, width).astype(np.int64))
            return self._merged


def _histograms(
    span: Span, windows: dict[Key, VariantWindow], percentiles: Sequence[Percentile], memo: HistogramMemo
) -> None:
    """Every variant's minutes merged at once: the older minutes' counts kept from the load before
    (``memo``), the newest few added, then one cumulative sum per variant over the buckets."""
    key_ids = np.array(
        [key_id for key, key_id in zip(span.keys, span.key_ids.tolist(), strict=True) if key in windows],
        dtype=np.int64,
    )
    order = [key for key in span.keys if key in windows]
    older, newest = span.blocks[:-TAIL], span.blocks[-TAIL:]
    merged = memo.merged(older, span.cache_keys, newest)
    lo, width = merged.lo, merged.matrix.shape[1]
    matrix = merged.matrix[key_ids]
    row_of_key = np.full(span.cache_keys, -1, dtype=np.int64)
    row_of_key[key_ids] = np.arange(key_ids.size)
    for block in newest:
        rows = row_of_key[block.hist_key]
        wanted = rows >= 0
        np.add.at(matrix, (rows[wanted], block.hist_bucket[wanted] - lo), block.hist_count[wanted])
    # A minute whose histogram does not hold all its samples predates histograms: that variant's
    # percentiles cannot be known.
    incomplete = row_of_key[np.concatenate([b.incomplete for b in span.blocks])]
    bad = np.zeros(len(order), dtype=bool)
    bad[incomplete[incomplete >= 0]] = True
    running = np.cumsum(matrix, axis=1)
    by_index = [windows[key] for key in order]
    served = np.array([w.served for w in by_index], dtype=np.int64)
    for p in percentiles:
        # Percentile.rank for every variant at once, in integers (exact, as its Fraction is).
        a, b = p.fraction.numerator, p.fraction.denominator
        ranks = np.minimum(served, np.maximum(1, -((-a * served) // b)))
        # The first bucket whose running count reaches the rank (nearest rank).
        found = np.minimum((running < ranks[:, None]).sum(axis=1), width - 1)
        for i, window in enumerate(by_index):
            if bad[i] or running[i, -1] == 0:
                continue
            value = histogram_value(lo + int(found[i]))
            if window.minimum is not None:
                value = max(window.minimum, value)
            if window.maximum is not None:
                value = min(window.maximum, value)
            window.percentiles[p.name] = value
