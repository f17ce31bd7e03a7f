"""Variants scaled to zero are counted, not sampled one by one: their minutes come out as before.

With thousands of endpoints registered and scaled to zero, the meter no longer writes each one's
all-zero sample at every flush: it counts them and writes one row per idle variant once its minute
is over (or with its other figures, when it was active in the minute). These tests check that every
reader sees the same minutes as when each sample was written on its own.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from coldbrew.control.store import Store
from coldbrew.metering import statistics
from coldbrew.metering.aggregate import AGGREGATE_COLUMNS, MinuteAggregate, VariantSample
from coldbrew.metering.meter import Meter, samples_from_snapshot
from coldbrew.metering.prometheus import registry_for
from coldbrew.metering.query import metrics_report, open_readonly, usage_rows
from coldbrew.metering.records import MeterRecord
from coldbrew.metering.statistics import BY_NAME, ENDPOINTS, SAGEMAKER, Series

T0 = 1_800_000_000.0  # a whole minute


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "coldbrew.db"
    Store(path).close()
    return path


def _variant(endpoint: str, envs: int, *, serverless: bool = True, in_flight: int = 0) -> dict[str, Any]:
    return {
        "endpoint": endpoint, "variant": "v", "serverless": serverless, "memory_mb": 2048,
        "max_concurrency": 4,
        "environments": [
            {"id": i, "memory_mb": 2048, "in_flight": in_flight, "rss_bytes": 256 * 2**20, "cpu_seconds": 1.0}
            for i in range(envs)
        ],
    }  # fmt: skip


def _record(endpoint: str, t: float) -> MeterRecord:
    return MeterRecord(
        endpoint=endpoint, variant="v", started_at=t, model_latency_us=2000, overhead_latency_us=100,
        cold_start=False, setup_us=0, memory_mb=2048, serverless=True, bytes_in=1, bytes_out=1,
        status=200, error_code=None,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


# Per sample tick (0.5 s apart, 3 minutes): what each endpoint holds. "idle" never has an
# environment, "busy" always does, "mixed" has one in the middle of the last minute only, "instance" is an
# instance variant scaled to nothing.
TICKS = 360


def _snapshot(tick: int) -> list[dict[str, Any]]:
    return [
        _variant("idle", 0),
        _variant("busy", 1, in_flight=tick % 2),
        _variant("mixed", 1 if 250 <= tick < 300 else 0),
        _variant("instance", 0, serverless=False),
    ]


def _rows(conn: sqlite3.Connection) -> dict[tuple[str, int], tuple[Any, ...]]:
    return {
        (r[0], r[1]): tuple(r[2:])
        for r in conn.execute(f"SELECT endpoint, minute, {', '.join(AGGREGATE_COLUMNS)} FROM meter_minutes")
    }


def _expected() -> dict[tuple[str, int], tuple[Any, ...]]:
    """Every sample added to its minute on its own, as the meter did before counting idle ones."""
    minutes: dict[tuple[str, int], MinuteAggregate] = {}
    seen: set[object] = set()
    for tick in range(TICKS):
        at = T0 + tick * 0.5
        for sample in samples_from_snapshot(_snapshot(tick), seen):
            agg = minutes.setdefault((sample.endpoint, int(at // 60 * 60)), MinuteAggregate())
            agg.add_sample(sample, 0.5)
    for t in (T0 + 70.25, T0 + 150.5):  # the records _run adds
        agg = minutes.setdefault(("idle", int(t // 60 * 60)), MinuteAggregate())
        agg.add_record(_record("idle", t))
    return {key: agg.row() for key, agg in minutes.items()}


def _run(db: Path, flush_every: int = 7) -> tuple[Meter, Clock]:
    clock = Clock()
    tick = 0
    meter = Meter(db, snapshot=lambda: _snapshot(tick), clock=clock)
    meter._last_sample = T0 - 0.5
    for tick in range(TICKS):
        clock.t = T0 + tick * 0.5
        meter.sample()
        if tick in (141, 301):  # an invocation of "idle" in minutes 1 and 2
            meter.record(_record("idle", T0 + (70.25 if tick == 141 else 150.5)))
        if tick % flush_every == 0:
            meter.flush()
    return meter, clock


def test_idle_samples_counted_give_the_same_rows(db: Path) -> None:
    meter, _ = _run(db)
    meter.close()
    assert _rows(open_readonly(db)) == _expected()


def test_an_idle_minute_is_written_once_it_is_over(db: Path) -> None:
    meter, clock = _run(db)
    meter.flush()
    conn = open_readonly(db)
    rows = _rows(conn)
    last = T0 + 120
    # The minutes over are all there, as they would have been.
    expected = _expected()
    assert {k: v for k, v in rows.items() if k[1] < last} == {
        k: v for k, v in expected.items() if k[1] < last
    }
    # In the current minute: the active variants' rows carry their idle samples already...
    assert rows[("busy", int(last))] == expected[("busy", int(last))]
    assert rows[("idle", int(last))] == expected[("idle", int(last))]  # it had an invocation
    assert rows[("mixed", int(last))] == expected[("mixed", int(last))]
    # ...and the variants idle all the minute long get theirs once it is over (or at close).
    assert ("instance", int(last)) not in rows
    clock.t = T0 + 180
    meter.flush()
    assert _rows(conn) == expected
    meter.close()
    assert _rows(conn) == expected


def test_readers_see_an_idle_variants_minutes(db: Path) -> None:
    meter, _ = _run(db)
    meter.close()
    conn = open_readonly(db)
    # The cost report's sampled minutes (what a deleted endpoint is priced from).
    usage = {r["endpoint"]: r for r in usage_rows(conn, None, None)}
    assert usage["instance"]["sampled_minutes"] == 3
    assert usage["idle"]["sampled_minutes"] == 3 and usage["idle"]["invocations"] == 2
    # CloudWatch: ServerlessConcurrentExecutionsUtilization of a minute with nothing running is 0
    # over every sample of it; MemoryUtilization has no sample where no environment existed.
    series = Series(BY_NAME[(SAGEMAKER, "ServerlessConcurrentExecutionsUtilization")], "idle", "v",
                    int(T0), int(T0 + 180), 60)  # fmt: skip
    points = statistics.read(conn, series, [])
    assert [(p.sample_count, p.total, p.minimum, p.maximum) for p in points] == [(120, 0.0, 0.0, 0.0)] * 3
    series = Series(BY_NAME[(SAGEMAKER, "ServerlessConcurrentExecutionsUtilization")], "mixed", "v",
                    int(T0 + 120), int(T0 + 180), 60)  # fmt: skip
    (point,) = statistics.read(conn, series, [])
    assert (point.sample_count, point.minimum) == (120, 0.0)
    assert point.average == 0.0
    memory = Series(BY_NAME[(ENDPOINTS, "MemoryUtilization")], "mixed", "v", int(T0), int(T0 + 180), 60)
    (point,) = statistics.read(conn, memory, [])  # the last minute only: it held one then
    assert point.sample_count == 50 and point.average == pytest.approx(12.5)
    # `coldbrew metrics`: one datapoint a minute, as before.
    report = metrics_report(conn, "instance", T0, 60, now=T0 + 180)
    assert [p["Timestamp"] for p in report["Datapoints"]] == [
        "2027-01-15T08:00:00Z", "2027-01-15T08:01:00Z", "2027-01-15T08:02:00Z",
    ]  # fmt: skip


def test_prometheus_lists_only_variants_with_something_to_show(db: Path) -> None:
    meter, _ = _run(db)
    meter.flush()
    text = generate_latest(registry_for(meter)).decode()
    meter.close()
    listed = {
        line.split('EndpointName="')[1].split('"')[0] for line in text.splitlines() if "EndpointName" in line
    }
    # "instance" never held an environment nor was invoked: nothing of it to export.
    assert listed == {"busy", "mixed", "idle"}
    assert 'sagemaker_ExecutionEnvironments{EndpointName="mixed",VariantName="v"} 0.0' in text
    assert 'sagemaker_ExecutionEnvironments{EndpointName="busy",VariantName="v"} 1.0' in text


def test_idle_samples_equal_zero_environment_samples() -> None:
    empty = VariantSample("e", "v", True, 1024, 4, environments=0, in_flight=0, rss_bytes=0, held_mb=0)
    for start in (MinuteAggregate(), MinuteAggregate(concurrency_utilization_min=0.5, samples=3)):
        one_by_one, counted = MinuteAggregate(**vars(start)), MinuteAggregate(**vars(start))
        for _ in range(5):
            one_by_one.add_sample(empty, 0.5)
        counted.add_idle_samples(True, 1024, 5)
        assert counted.row() == one_by_one.row()


def test_an_idle_tuple_in_the_snapshot_is_a_variant_without_environments() -> None:
    """``Serving.environment_snapshot`` gives a variant holding nothing as a tuple, not a dict."""
    as_dict = _variant("e", 0, serverless=False)
    as_tuple = ("e", "v", False, 2048)
    rows = []
    for snapshot in ([as_tuple], [as_dict]):
        agg = MinuteAggregate()
        for sample in samples_from_snapshot(snapshot):
            agg.add_sample(sample, 0.5)
        rows.append(agg.row())
    assert rows[0] == rows[1]
    tuples: list[Any] = []
    dicts: list[Any] = []
    assert (
        samples_from_snapshot([as_tuple], idle=tuples) == samples_from_snapshot([as_dict], idle=dicts) == []
    )
    assert tuples == dicts == [as_tuple]
