"""The meter: takes one record per invocation off the hot path and keeps it durable and summed.

``record`` only appends to a deque (atomic under the GIL, no lock, no I/O), so the event loop never
waits for the database. A writer thread drains the deque every ``flush_interval_s`` (0.5 s by
default, so a crash loses at most that much), writes the raw records and adds them to the
per-minute aggregates in one transaction, so the aggregates are exact and survive the pruning of
raw records after the retention period. The same thread samples the live environments for
MemoryUtilization, ServerlessConcurrentExecutionsUtilization, the memory-time they hold and, from
the CPU time each instance environment used since the previous sample, CPUUtilization.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from coldbrew import heap
from coldbrew.metering.aggregate import (
    Key,
    MinuteAggregate,
    VariantSample,
    VariantTotals,
    register_sql_functions,
    upsert_sql,
)
from coldbrew.metering.records import RECORD_COLUMNS, MeterRecord, record_row
from coldbrew.metering.written import MinuteLog

log = logging.getLogger("coldbrew.metering")

Idle = tuple[str, str, bool, int]
"""A variant that held no environment when sampled: endpoint, variant, serverless, memory_mb."""

Snapshot = Callable[[], Iterable[dict[str, Any] | Idle]]
"""Returns, per live variant: endpoint, variant, serverless, memory_mb, max_concurrency and
``environments``, a list of dicts with id, memory_mb, in_flight, rss_bytes and (instance variants)
cpu_seconds, the CPU time the environment used so far (None once its worker is gone); or, for a
variant holding no environment, just an ``Idle`` tuple."""

CpuReadings = dict[object, tuple[float, float]]
"""Per environment (endpoint, variant, id): when (monotonic seconds) and its cpu_seconds then."""

PRUNE_INTERVAL_S = 60.0
HEAP_TRIM_INTERVAL_S = 10.0
_INSERT_RECORD = (
    f"INSERT INTO meter_records ({', '.join(RECORD_COLUMNS)}) VALUES ({', '.join('?' * len(RECORD_COLUMNS))})"
)


def cpu_utilization(
    variant: dict[str, Any],
    envs: Iterable[dict[str, Any]],
    cpu: CpuReadings,
    now: float,
    current: CpuReadings,
) -> float | None:
    """Percent of a core, summed over the environments: for each one read now and in ``cpu``, the
    CPU seconds it used in between over the seconds in between. An environment read for the first
    time, gone (cpu_seconds None) or whose reading went back (a child reaped by someone else)
    contributes nothing; None when none contributes. Readings taken now go into ``current``."""
    total: float | None = None
    for e in envs:
        used = e.get("cpu_seconds")
        if used is None or "id" not in e:
            continue
        key = (variant["endpoint"], variant["variant"], e["id"])
        current[key] = (now, float(used))
        previous = cpu.get(key)
        if previous is None:
            continue
        at, before = previous
        if now - at <= 0 or used < before:
            continue
        total = (total or 0.0) + 100.0 * (used - before) / (now - at)
    return total


def samples_from_snapshot(
    snapshot: Iterable[dict[str, Any] | Idle],
    seen: set[object] | None = None,
    cpu: CpuReadings | None = None,
    now: float = 0.0,
    idle: list[Idle] | None = None,
) -> list[VariantSample]:
    """Samples per variant; ``seen`` (environment ids of the previous sample) and ``cpu`` (CPU
    readings of the previous sample, taken at ``now``, monotonic seconds) are updated in place.
    With ``idle``, a variant holding no environment is appended to it instead of sampled (its
    sample would be all zeros: ``MinuteAggregate.add_idle_samples`` counts such samples)."""
    samples = []
    current: set[object] = set()
    readings: CpuReadings = {}
    for variant in snapshot:
        if isinstance(variant, tuple):
            if idle is not None:
                idle.append(variant)
            else:
                endpoint, name, serverless, memory_mb = variant
                samples.append(VariantSample(endpoint, name, serverless, memory_mb, 0, 0, 0, 0, 0))
            continue
        envs = variant.get("environments", [])
        if not envs and idle is not None:
            idle.append(
                (
                    variant["endpoint"],
                    variant["variant"],
                    bool(variant["serverless"]),
                    int(variant["memory_mb"]),
                )
            )
            continue
        ids = {(variant["endpoint"], variant["variant"], e["id"]) for e in envs if "id" in e}
        current |= ids
        new = len(ids - seen) if seen is not None else 0
        cpu_percent = None
        if cpu is not None and not variant["serverless"]:
            cpu_percent = cpu_utilization(variant, envs, cpu, now, readings)
        samples.append(
            VariantSample(
                endpoint=variant["endpoint"],
                variant=variant["variant"],
                serverless=bool(variant["serverless"]),
                memory_mb=int(variant["memory_mb"]),
                max_concurrency=int(variant.get("max_concurrency", 0)),
                environments=len(envs),
                in_flight=sum(int(e.get("in_flight", 0)) for e in envs),
                rss_bytes=sum(int(e.get("rss_bytes", 0)) for e in envs),
                held_mb=sum(int(e.get("memory_mb", variant["memory_mb"])) for e in envs),
                new_environments=new,
                cpu_utilization=cpu_percent,
            )
        )
    if seen is not None:
        seen.clear()
        seen |= current
    if cpu is not None:
        cpu.clear()
        cpu.update(readings)
    return samples


class Meter:
    def __init__(
        self,
        db_path: Path,
        *,
        retention_days: float = 7.0,
        flush_interval_s: float = 0.5,
        sample_interval_s: float = 0.5,
        snapshot: Snapshot | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db_path = db_path
        self.retention_s = retention_days * 86400
        self.flush_interval_s = flush_interval_s
        self.sample_interval_s = sample_interval_s
        self.snapshot = snapshot
        self.clock = clock
        self.monotonic = monotonic
        """Times CPU readings: CPUUtilization's intervals."""
        self._buffer: deque[MeterRecord] = deque()
        self._samples: deque[tuple[float, float, list[VariantSample], list[Idle]]] = deque()
        self._idle: dict[int, dict[Key, list[Any]]] = {}
        """Per minute, the variants sampled without an environment in it and not written yet:
        [serverless, memory_mb, how many samples]. With thousands of endpoints scaled to zero,
        writing each one's row at every flush was most of the meter's work; a variant idle for a
        whole minute gets its row once the minute is over (the same row), one that was active in
        the minute gets its idle samples with its other figures at every flush."""
        self._active: dict[int, set[Key]] = {}
        """Per minute not over yet (or with idle samples still to write), the variants that had a
        record or a sample with an environment in it."""
        self._lock = threading.Lock()
        """Serialises flushes (writer thread, /metrics, close) and guards ``totals``."""
        self.totals: dict[Key, VariantTotals] = defaultdict(VariantTotals)
        self._conn = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a crash of the process (not of the machine): enough for
        # metering, and far cheaper than FULL at hundreds of batches a minute.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        register_sql_functions(self._conn)
        self._upsert = upsert_sql()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sample = self.clock()
        self._last_prune = 0.0
        self._next_trim = time.monotonic() + HEAP_TRIM_INTERVAL_S
        self._seen: set[object] = set()
        """Environment ids in the last sample: new ones are environment starts."""
        self._cpu: CpuReadings = {}
        """CPU readings of the last sample, to take the next one's from."""
        self.written = MinuteLog()
        """The minutes each flush wrote, for readers that keep minutes in memory (the dashboard)."""

    # --- the hot path -------------------------------------------------------------------------

    def record(self, record: MeterRecord) -> None:
        self._buffer.append(record)

    # --- the writer thread --------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="coldbrew-meter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_sample = time.monotonic()
        while not self._stop.wait(min(self.flush_interval_s, max(0.0, next_sample - time.monotonic()))):
            try:
                if self.snapshot is not None and time.monotonic() >= next_sample:
                    next_sample = time.monotonic() + self.sample_interval_s
                    self.sample()
                self.flush()
                self._maybe_prune()
            except Exception:  # a metering failure must never stop metering for good
                log.exception("metering flush failed; retrying")

    def sample(self) -> None:
        assert self.snapshot is not None
        now = self.clock()
        idle: list[Idle] = []
        try:
            samples = samples_from_snapshot(self.snapshot(), self._seen, self._cpu, self.monotonic(), idle)
        except RuntimeError:
            # The pools changed while we read them (they live on the event loop); skip this tick.
            return
        seconds, self._last_sample = now - self._last_sample, now
        self._samples.append((now, min(seconds, 5 * self.sample_interval_s), samples, idle))

    def flush(self, *, everything: bool = False) -> int:
        """Write what was recorded so far; returns how many records were written. The idle samples
        of a minute not over yet whose variant had nothing else in it wait for the minute's end
        (``everything``: written now too)."""
        with self._lock:
            batch = [self._buffer.popleft() for _ in range(len(self._buffer))]
            sampled = [self._samples.popleft() for _ in range(len(self._samples))]
            current = float("inf") if everything else self.clock() // 60 * 60
            if not batch and not sampled and not (self._idle and min(self._idle) < current):
                return 0
            minutes: dict[tuple[str, str, int], MinuteAggregate] = defaultdict(MinuteAggregate)
            for record in batch:
                minutes[(record.endpoint, record.variant, int(record.started_at // 60 * 60))].add_record(
                    record
                )
            for at, seconds, samples, idle in sampled:
                minute = int(at // 60 * 60)
                for sample in samples:
                    minutes[(sample.endpoint, sample.variant, minute)].add_sample(sample, seconds)
                if idle:
                    counts = self._idle.setdefault(minute, {})
                    for endpoint, variant, serverless, memory_mb in idle:
                        entry = counts.get((endpoint, variant))
                        if entry is None:
                            counts[(endpoint, variant)] = [serverless, memory_mb, 1]
                        else:
                            entry[0], entry[1] = serverless, memory_mb
                            entry[2] += 1
            for endpoint, variant, minute in minutes:
                self._active.setdefault(minute, set()).add((endpoint, variant))
            # What idle samples go out with this flush: a whole minute once it is over, else those
            # of variants that have a row in the minute anyway. Removed only once committed.
            idle_written: list[tuple[int, list[Key] | None]] = []
            for minute, counts in self._idle.items():
                if minute < current:
                    keys: list[Key] | None = None
                    taken: Iterable[tuple[Key, list[Any]]] = counts.items()
                else:
                    keys = [k for k in self._active.get(minute, ()) if k in counts]
                    taken = [(k, counts[k]) for k in keys]
                for (endpoint, variant), (serverless, memory_mb, count) in taken:
                    minutes[(endpoint, variant, minute)].add_idle_samples(serverless, memory_mb, count)
                idle_written.append((minute, keys))
            rows = [(*key, *agg.row()) for key, agg in minutes.items()]
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(_INSERT_RECORD, [record_row(r) for r in batch])
                self._conn.executemany(self._upsert, rows)
            except BaseException:
                self._conn.execute("ROLLBACK")
                # Put them back so the next flush retries instead of losing them.
                self._buffer.extendleft(reversed(batch))
                raise
            self._conn.execute("COMMIT")
            self.written.wrote({minute for _, _, minute in minutes})
            for minute, keys in idle_written:
                if keys is None:
                    del self._idle[minute]
                else:
                    counts = self._idle[minute]
                    for key in keys:
                        del counts[key]
            for minute in [m for m in self._active if m < current and m not in self._idle]:
                del self._active[minute]
            for record in batch:
                self.totals[(record.endpoint, record.variant)].add_record(record)
            if sampled:
                # Variants without an environment are not in the samples: their gauges are zero.
                latest = {(s.endpoint, s.variant): s for s in sampled[-1][2]}
                for key, totals in self.totals.items():
                    if key not in latest:
                        totals.memory_utilization = totals.concurrency_utilization = 0.0
                        totals.environments = 0
                for _, _, samples, _ in sampled:
                    for sample in samples:
                        self.totals[
                            (sample.endpoint, sample.variant)
                        ].environment_starts += sample.new_environments
                for key, sample in latest.items():
                    totals = self.totals[key]
                    totals.memory_utilization = sample.memory_utilization
                    totals.concurrency_utilization = sample.concurrency_utilization
                    totals.environments = sample.environments
            return len(batch)

    def _maybe_prune(self) -> None:
        if time.monotonic() >= self._next_trim:
            # The process's C heap, not metering's: this thread wakes up anyway (coldbrew.heap).
            self._next_trim = time.monotonic() + HEAP_TRIM_INTERVAL_S
            heap.trim()
        now = self.clock()
        if now - self._last_prune < PRUNE_INTERVAL_S:
            return
        self._last_prune = now
        self.prune(now)

    def prune(self, now: float) -> int:
        """Drop raw records older than the retention period; the minute aggregates stay."""
        with self._lock:
            cursor = self._conn.execute(
                "DELETE FROM meter_records WHERE started_at < ?", [now - self.retention_s]
            )
            return cursor.rowcount

    def totals_snapshot(self) -> dict[Key, VariantTotals]:
        import copy

        with self._lock:
            return copy.deepcopy(dict(self.totals))

    def close(self) -> None:
        """Stop the writer thread and flush what is left (called after serving has drained)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.flush(everything=True)
        finally:
            with self._lock:
                self._conn.close()
