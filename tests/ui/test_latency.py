"""The endpoints page's one-pass read of every variant gives what CloudWatch's per-series read gives:
exact percentiles while raw records are all there, the histograms' once they are pruned."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import pytest

from coldbrew.control.store import Store
from coldbrew.metering import statistics
from coldbrew.metering.meter import Meter
from coldbrew.metering.records import MeterRecord
from coldbrew.metering.statistics import BY_NAME, SAGEMAKER, Percentile, Series
from coldbrew.ui.db import ReadOnly
from coldbrew.ui.latency import HistogramMemo, read_window
from coldbrew.ui.minutes import MinuteCache

PERCENTILES = [
    Percentile(n, Fraction(v)) for n, v in (("p0", 0), ("p50", "0.5"), ("p99", "0.99"), ("p100", 1))
]
START = 1_800_000_000 // 60 * 60
END = START + 3600


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "coldbrew.db"
    Store(path).close()
    meter = Meter(path, clock=lambda: END + 10)
    rng = random.Random(7)
    for e in range(12):
        variants = ("AllTraffic", "B") if e % 3 == 0 else ("AllTraffic",)
        for variant in variants:
            serverless = e % 4 != 1
            for _ in range(rng.randint(1, 80)):
                at = START + rng.random() * 3600
                status, code = rng.choice(
                    [(200, None)] * 8 + [(400, "ThrottlingException"), (424, "ModelError")]
                )
                meter.record(
                    MeterRecord(
                        f"e{e:02d}", variant, at,
                        0 if code == "ThrottlingException" else int(rng.lognormvariate(9, 1)),
                        rng.randint(100, 900), rng.random() < 0.1, rng.randint(1000, 90000), 1024, serverless,
                        10, 10, status, code,
                    )
                )  # fmt: skip
    meter.flush()
    meter.close()
    return path


def _expected(conn: object, endpoint: str, variant: str) -> dict[str, float]:
    metric = BY_NAME[(SAGEMAKER, "ModelLatency")]
    points = statistics.read(conn, Series(metric, endpoint, variant, START, END, END - START), PERCENTILES)  # type: ignore[arg-type]
    return points[0].percentiles if points else {}


def _check(db: Path, raw_limit: int = 50_000) -> int:
    conn = ReadOnly(db).connection()
    assert conn is not None
    found = read_window(conn, START, END, PERCENTILES, raw_limit=raw_limit)
    assert len(found) == 16
    for window in found:
        assert window.percentiles == _expected(conn, window.endpoint, window.variant), window
        invocations = conn.execute(
            "SELECT sum(invocations) FROM meter_minutes WHERE endpoint = ? AND variant = ?",
            [window.endpoint, window.variant],
        ).fetchone()[0]
        assert window.invocations == invocations
    return sum(1 for w in found if w.percentiles)


def test_exact_while_raw_records_are_kept(db: Path) -> None:
    assert _check(db) == 16


def test_from_histograms_once_records_are_pruned(db: Path) -> None:
    import sqlite3

    with sqlite3.connect(db) as conn:
        # Some variants lose all their records, one only part of them.
        conn.execute("DELETE FROM meter_records WHERE endpoint IN ('e01', 'e02', 'e05')")
        conn.execute(
            "DELETE FROM meter_records WHERE id IN "
            "(SELECT id FROM meter_records WHERE endpoint = 'e03' LIMIT 3)"
        )
    assert _check(db) == 16


def test_past_the_raw_limit_every_percentile_is_the_histograms(db: Path) -> None:
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM meter_records")  # what read() then answers from, too
    assert _check(db, raw_limit=0) == 16


def test_past_the_raw_limit_percentiles_are_within_one_percent(db: Path) -> None:
    conn = ReadOnly(db).connection()
    assert conn is not None
    for window in read_window(conn, START, END, PERCENTILES, raw_limit=0):
        exact = _expected(conn, window.endpoint, window.variant)
        assert window.percentiles.keys() == exact.keys()
        for name, value in exact.items():
            assert window.percentiles[name] == pytest.approx(value, rel=0.01, abs=1)


def test_the_cached_minutes_follow_the_meters_writes(tmp_path: Path) -> None:
    """The page's cache read once, then only the minutes the meter says it wrote again, an old one
    among them (an invocation recorded in the minute it started, long after): the same answer as
    reading everything afresh."""
    path = tmp_path / "coldbrew.db"
    Store(path).close()
    meter = Meter(path, clock=lambda: END + 10)
    cache, memo = MinuteCache(meter.written), HistogramMemo()
    conn = ReadOnly(path).connection()
    assert conn is not None
    rng = random.Random(3)
    for round_ in range(6):
        for _ in range(200):
            # Mostly the newest minutes; now and then one early in the window.
            at = END - rng.random() * 300 if rng.random() < 0.9 else START + rng.random() * 600
            meter.record(
                MeterRecord(f"e{rng.randint(0, 5)}", "AllTraffic", at, int(rng.lognormvariate(9, 1)),
                            300, False, 0, 1024, True, 10, 10, 200, None)
            )  # fmt: skip
        meter.flush()
        for raw_limit in (50_000, 0):
            cached = read_window(conn, START, END, PERCENTILES, raw_limit, minutes=cache, memo=memo)
            fresh = read_window(conn, START, END, PERCENTILES, raw_limit)
            assert sorted(map(repr, cached)) == sorted(map(repr, fresh)), round_
    meter.close()
