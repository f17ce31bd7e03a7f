"""The meter's recent minutes, kept in memory: a page load reads only the minutes written since.

The endpoints page sums the last hour's minutes of every variant (counts, latency histograms) and
prices the current hour's; with 1,000 busy endpoints that is 60,000 rows and their histograms, read
and decoded on every load. Most of them have not changed since the load before, so this keeps each
minute's rows decoded (numpy arrays, one block per minute) and asks the meter's
:class:`~coldbrew.metering.written.MinuteLog` which minutes were written since: only those are read
again (usually the current one). A minute is never assumed final by the clock, since an
asynchronous invocation is recorded in the minute it started, up to an hour later.

Minutes before ``lo`` (the earliest a caller asked for) are dropped; asking for an earlier one reads
the gap. Safe to call from several threads (one lock; the reads are short).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from coldbrew.metering.aggregate import HISTOGRAM_DTYPE
from coldbrew.metering.statistics import BY_NAME, SAGEMAKER
from coldbrew.metering.written import MinuteLog

Key = tuple[str, str]
"""(endpoint, variant), as the meter writes them."""

_LATENCY = BY_NAME[(SAGEMAKER, "ModelLatency")]
_KINDS = ", ".join(str(k) for k in _LATENCY.kinds)
_COUNTED = f"serverless IN ({_KINDS}) AND {_LATENCY.count} > 0"
# One row per variant and minute: the columns the endpoints page's figures are sums, minima or
# maxima of, as latency.read_window and metering.query.usage_rows take them in SQL.
_SELECT = (
    f"SELECT minute, endpoint, variant, serverless, memory_mb, invocations, errors_4xx, errors_5xx, "
    f"CASE WHEN serverless = 1 THEN cold_starts ELSE 0 END, "
    f"CASE WHEN serverless IN ({_KINDS}) THEN {_LATENCY.count} ELSE 0 END, "
    f"CASE WHEN {_COUNTED} THEN {_LATENCY.low} END, "
    f"CASE WHEN {_COUNTED} THEN {_LATENCY.high} END, "
    f"CASE WHEN {_COUNTED} AND {_LATENCY.low} IS NULL THEN 1 ELSE 0 END, "
    f"cold_starts, billed_mb_ms, bytes_in, bytes_out, samples > 0, held_mb_s, "
    f"CASE WHEN {_COUNTED} THEN {_LATENCY.histogram} END "
    f"FROM meter_minutes"
)
COUNTS = ("invocations", "errors_4xx", "errors_5xx", "cold_serverless", "served", "low_unknown")
USAGE = ("cold_starts", "billed_mb_ms", "bytes_in", "bytes_out", "sampled", "held_mb_s")


@dataclass(frozen=True, slots=True)
class Block:
    """One minute's rows, column by column; ``key`` indexes :attr:`MinuteCache.keys`."""

    minute: int
    key: np.ndarray
    serverless: np.ndarray
    memory_mb: np.ndarray
    counts: np.ndarray
    """(rows, len(COUNTS)) int64."""
    usage: np.ndarray
    """(rows, len(USAGE)) float64 (sums of integers, exact below 2**53)."""
    low: np.ndarray
    """ModelLatency's minimum (NaN: none or unknown)."""
    high: np.ndarray
    hist_key: np.ndarray
    """Histogram pairs of rows with ModelLatency samples: their key, bucket and count."""
    hist_bucket: np.ndarray
    hist_count: np.ndarray
    incomplete: np.ndarray
    """Keys of rows whose histogram does not hold all their samples (written before histograms)."""


@dataclass(frozen=True, slots=True)
class Span:
    """Minutes [start, end) of every key, summed (only keys with rows in it)."""

    keys: list[Key]
    key_ids: np.ndarray
    """Each key's index in :attr:`MinuteCache.keys`."""
    serverless: np.ndarray
    memory_mb: np.ndarray
    counts: np.ndarray
    usage: np.ndarray
    first_minute: np.ndarray
    low: np.ndarray
    high: np.ndarray
    blocks: list[Block]
    cache_keys: int
    """How many keys the cache knew when it summed this (the bound of ``Block.key``)."""


class MinuteCache:
    def __init__(self, log: MinuteLog) -> None:
        self.log = log
        self.keys: list[Key] = []
        self._index: dict[Key, int] = {}
        self._blocks: dict[int, Block] = {}
        self._lo: int | None = None
        """Every minute from here on is in ``_blocks`` (or has no rows), as of ``_version``."""
        self._version = 0
        self._lock = threading.Lock()

    def span(self, conn: sqlite3.Connection, start: int, end: int) -> Span:
        """Minutes [start, end) summed per key, after reading what changed since the last call."""
        with self._lock:
            self._refresh(conn, start)
            blocks = [b for m, b in sorted(self._blocks.items()) if start <= m < end]
            return self._sum(blocks)

    def forget_before(self, minute: int) -> None:
        """Drop minutes before ``minute`` (no caller needs them any more)."""
        with self._lock:
            for m in [m for m in self._blocks if m < minute]:
                del self._blocks[m]
            if self._lo is not None and self._lo < minute:
                self._lo = minute

    # --- reading -----------------------------------------------------------------------------

    def _refresh(self, conn: sqlite3.Connection, lo: int) -> None:
        # The version is taken before reading: a write that lands during the read is told next time.
        version, changed = self.log.since(self._version)
        if changed is None or self._lo is None:
            self._blocks.clear()
            self._read(conn, "minute >= ?", [lo])
            self._lo = lo
        else:
            if lo < self._lo:
                self._read(conn, "minute >= ? AND minute < ?", [lo, self._lo])
                self._lo = lo
            again = sorted(m for m in changed if m >= self._lo)
            if again:
                for m in again:
                    self._blocks.pop(m, None)
                marks = ", ".join("?" for _ in again)
                self._read(conn, f"minute IN ({marks})", again)
        self._version = version

    def _read(self, conn: sqlite3.Connection, where: str, params: list[int]) -> None:
        cursor = conn.cursor()
        cursor.row_factory = None  # plain tuples: tens of thousands of rows
        rows = cursor.execute(f"{_SELECT} WHERE {where} ORDER BY minute", params).fetchall()
        start = 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows[i][0] != rows[start][0]:
                self._blocks[rows[start][0]] = self._block(rows[start:i])
                start = i

    def _key(self, endpoint: str, variant: str) -> int:
        found = self._index.get((endpoint, variant))
        if found is None:
            found = self._index[(endpoint, variant)] = len(self.keys)
            self.keys.append((endpoint, variant))
        return found

    def _block(self, rows: list[tuple[object, ...]]) -> Block:
        keys = np.array([self._key(r[1], r[2]) for r in rows], dtype=np.int64)  # type: ignore[arg-type]
        columns = list(zip(*rows, strict=True))

        def floats(i: int) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in columns[i]], dtype=np.float64)

        counts = np.array(columns[5:10] + columns[12:13], dtype=np.int64).T
        usage = np.array(columns[13:19], dtype=np.float64).T
        size = HISTOGRAM_DTYPE.itemsize
        owners, blobs, wanted = [], [], []
        for k, served, blob in zip(keys.tolist(), columns[9], columns[19], strict=True):
            if not served:  # no ModelLatency samples (its histogram column is NULL then)
                continue
            owners.append(k)
            wanted.append(served)
            blobs.append(blob if blob and len(blob) % size == 0 else b"")  # type: ignore[arg-type]
        pairs = np.frombuffer(b"".join(blobs), dtype=HISTOGRAM_DTYPE)
        lengths = [len(b) // size for b in blobs]
        row_of = np.repeat(np.arange(len(blobs)), lengths)
        counted = np.bincount(row_of, weights=pairs["count"], minlength=len(blobs))
        owners_a = np.array(owners, dtype=np.int64)
        incomplete = owners_a[counted != np.array(wanted, dtype=np.float64)] if owners else owners_a
        return Block(
            minute=int(rows[0][0]),  # type: ignore[call-overload]
            key=keys,
            serverless=np.array(columns[3], dtype=np.int64),
            memory_mb=np.array(columns[4], dtype=np.int64),
            counts=counts.reshape(len(rows), len(COUNTS)),
            usage=usage.reshape(len(rows), len(USAGE)),
            low=floats(10),
            high=floats(11),
            hist_key=owners_a[row_of] if owners else owners_a,
            hist_bucket=pairs["bucket"].astype(np.int64),
            hist_count=pairs["count"].astype(np.int64),
            incomplete=incomplete,
        )

    # --- summing -----------------------------------------------------------------------------

    def _sum(self, blocks: Iterable[Block]) -> Span:
        blocks = list(blocks)
        n = len(self.keys)
        if not blocks:
            empty = np.zeros(0, dtype=np.int64)
            return Span([], empty, empty, empty, np.zeros((0, len(COUNTS)), np.int64),
                        np.zeros((0, len(USAGE))), empty, np.zeros(0), np.zeros(0), [], n)  # fmt: skip
        key = np.concatenate([b.key for b in blocks])
        present = np.unique(key)
        index = np.full(n, -1, dtype=np.int64)
        index[present] = np.arange(present.size)
        row = index[key]
        m = present.size
        counts = np.zeros((m, len(COUNTS)), dtype=np.int64)
        np.add.at(counts, row, np.concatenate([b.counts for b in blocks]))
        usage = np.zeros((m, len(USAGE)))
        np.add.at(usage, row, np.concatenate([b.usage for b in blocks]))
        serverless = np.zeros(m, dtype=np.int64)
        np.maximum.at(serverless, row, np.concatenate([b.serverless for b in blocks]))
        memory = np.zeros(m, dtype=np.int64)
        np.maximum.at(memory, row, np.concatenate([b.memory_mb for b in blocks]))
        first = np.full(m, np.iinfo(np.int64).max, dtype=np.int64)
        minutes = np.concatenate([np.full(b.key.size, b.minute, dtype=np.int64) for b in blocks])
        np.minimum.at(first, row, minutes)
        low = np.full(m, np.nan)
        np.fmin.at(low, row, np.concatenate([b.low for b in blocks]))
        high = np.full(m, np.nan)
        np.fmax.at(high, row, np.concatenate([b.high for b in blocks]))
        return Span([self.keys[k] for k in present.tolist()], present, serverless, memory, counts, usage,
                    first, low, high, blocks, n)  # fmt: skip
