"""Statistics from the meter's store in-process: exact while raw records exist, from the aggregates'
histograms (within 1%) once they are pruned, instance-variant metrics, and GetMetricData's budget."""

from __future__ import annotations

import math
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from coldbrew.cloudwatch import operations
from coldbrew.control.store import Store
from coldbrew.metering import statistics
from coldbrew.metering.meter import Meter
from coldbrew.metering.records import MeterRecord
from coldbrew.metering.statistics import BY_NAME, SAGEMAKER, Percentile, Series

NOW = 1_800_000_000.0  # a whole minute
HOUR = 3600


def _record(
    t: float, latency_us: int, *, status: int = 200, code: str | None = None, serverless: bool = True
) -> MeterRecord:
    return MeterRecord(
        endpoint="ep", variant="v", started_at=t, model_latency_us=latency_us, overhead_latency_us=100,
        cold_start=False, setup_us=0, memory_mb=2048, serverless=serverless, bytes_in=1, bytes_out=1,
        status=status, error_code=code,
    )  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "coldbrew.db"
    Store(path).close()
    return path


def _read(
    db: Path, metric: str, start: float, end: float, period: int, *pcts: str
) -> list[statistics.Datapoint]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    series = Series(BY_NAME[(SAGEMAKER, metric)], "ep", "v", int(start), int(end), period)
    percentiles = [Percentile(p, operations.percentile(p).fraction) for p in pcts]  # type: ignore[union-attr]
    return statistics.read(conn, series, percentiles)


def _nearest(values: list[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(round(fraction * len(ordered), 9))) - 1]


def test_percentiles_are_exact_then_within_one_percent_after_pruning(db: Path) -> None:
    rng = random.Random(7)
    latencies = [int(rng.lognormvariate(10, 1)) for _ in range(3000)]
    meter = Meter(db, retention_days=1, clock=lambda: NOW)
    for i, latency in enumerate(latencies):
        meter.record(_record(NOW - 2 * HOUR + 2 * i, latency))
    meter.flush()
    exact = _read(db, "ModelLatency", NOW - 2 * HOUR, NOW, 2 * HOUR, "p50", "p99", "p99.9")
    assert len(exact) == 1
    for name, fraction in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)):
        assert exact[0].percentiles[name] == _nearest(latencies, fraction)
    assert (exact[0].minimum, exact[0].maximum, exact[0].total) == (
        min(latencies),
        max(latencies),
        sum(latencies),
    )

    # Half the raw records pruned: that period's percentiles come from the histograms.
    meter.prune(NOW - HOUR + 86400)
    meter.close()
    two = _read(db, "ModelLatency", NOW - 2 * HOUR, NOW, HOUR, "p0", "p50", "p99", "p100")
    halves = [latencies[:1800], latencies[1800:]]
    for point, values in zip(two, halves, strict=True):
        assert point.sample_count == len(values) and point.minimum == min(values)
        for name, fraction in (("p50", 0.5), ("p99", 0.99)):
            assert point.percentiles[name] == pytest.approx(_nearest(values, fraction), rel=0.01)
        # Clamped to the exact extremes, which the aggregates keep.
        assert point.percentiles["p0"] == min(values) and point.percentiles["p100"] == max(values)
    assert two[1].percentiles["p50"] == _nearest(halves[1], 0.5)  # still exact: all its raw records exist


def test_error_counts_have_exact_percentiles_and_sagemakers_zeros(db: Path) -> None:
    meter = Meter(db)
    for i in range(100):
        status, code = (400, "ThrottlingException") if i < 3 else (200, None)
        meter.record(_record(NOW - 600 + i, 1000, status=status, code=code))
    meter.close()
    (point,) = _read(db, "Invocation4XXErrors", NOW - 600, NOW, 600, "p97", "p98")
    assert (point.sample_count, point.total, point.minimum, point.maximum) == (100, 3, 0, 1)
    assert point.average == pytest.approx(0.03)
    assert point.percentiles == {"p97": 0.0, "p98": 1.0}
    (latency,) = _read(db, "ModelLatency", NOW - 600, NOW, 600)
    assert latency.sample_count == 97  # a throttled request never reached the model
    (overhead,) = _read(db, "OverheadLatency", NOW - 600, NOW, 600)
    assert overhead.sample_count == 100


def test_instance_variants_publish_per_instance_and_model_errors(db: Path) -> None:
    snapshot = [{
        "endpoint": "ep", "variant": "v", "serverless": False, "memory_mb": 4096, "max_concurrency": 0,
        "environments": [
            {"id": i, "memory_mb": 4096, "in_flight": 0, "rss_bytes": 1024 * 2**20} for i in (1, 2)
        ],
    }]  # fmt: skip
    meter = Meter(db, snapshot=lambda: snapshot, clock=lambda: NOW - 300)
    meter.sample()
    for i in range(10):
        code = ("ModelError", 424) if i == 0 else (None, 200)
        meter.record(_record(NOW - 300 + i, 1000, status=code[1], code=code[0], serverless=False))
    meter.close()
    (per_instance,) = _read(db, "InvocationsPerInstance", NOW - 600, NOW, 600)
    assert (per_instance.total, per_instance.sample_count, per_instance.maximum) == (5.0, 10, 0.5)
    (errors,) = _read(db, "InvocationModelErrors", NOW - 600, NOW, 600)
    assert errors.total == 1
    assert _read(db, "ModelSetupTime", NOW - 600, NOW, 600) == []  # serverless only
    assert _read(db, "ServerlessConcurrentExecutionsUtilization", NOW - 600, NOW, 600) == []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    memory_metric = BY_NAME[("/aws/sagemaker/Endpoints", "MemoryUtilization")]
    memory = statistics.read(conn, Series(memory_metric, "ep", "v", int(NOW - 600), int(NOW), 600))
    assert memory[0].average == pytest.approx(25.0)
    listed = {m.name for m, _, _ in statistics.active(conn, int(NOW - 3600))}
    assert {"InvocationsPerInstance", "InvocationModelErrors"} <= listed
    assert not {"ModelSetupTime", "ServerlessConcurrentExecutionsUtilization"} & listed


def test_minutes_from_before_schema_3_report_no_minimum_they_cannot_know(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO meter_minutes (endpoint, variant, minute, invocations, model_latency_us, "
        "model_latency_max_us) VALUES ('ep', 'v', ?, 4, 4000, 2500)",
        [int(NOW - 600)],
    )
    conn.commit()
    conn.close()
    (point,) = _read(db, "ModelLatency", NOW - 600, NOW, 600, "p50")
    assert (point.sample_count, point.average, point.maximum) == (4, 1000, 2500)
    assert point.minimum is None and point.percentiles == {}  # no raw records, no histogram


def test_get_metric_data_pages_within_its_scan_budget(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meter = Meter(db)
    for day in range(10):
        meter.record(_record(NOW - day * 86400 - 30, 1000))
    meter.close()
    monkeypatch.setattr(operations, "SCAN_BUDGET_MINUTES", 3 * 1440)  # three days a page
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    metric = {"Namespace": SAGEMAKER, "MetricName": "Invocations", "Dimensions": [
        {"Name": "EndpointName", "Value": "ep"}, {"Name": "VariantName", "Value": "v"}]}  # fmt: skip
    request: dict[str, Any] = {
        "MetricDataQueries": [{"Id": "a", "MetricStat": {"Metric": metric, "Period": 86400, "Stat": "Sum"}}],
        "StartTime": NOW - 10 * 86400,
        "EndTime": NOW,
    }
    stamps, pages = [], 0
    while True:
        page = operations.get_metric_data(conn, request, NOW)
        pages += 1
        stamps += [t for r in page["MetricDataResults"] for t in r["Timestamps"]]
        if "NextToken" not in page:
            break
        request["NextToken"] = page["NextToken"]
    assert pages == 4 and len(stamps) == 10 and stamps == sorted(stamps, reverse=True)
