"""The meter in-process: exact aggregates under concurrent recording, retention, Prometheus output."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from coldbrew.backends.processes import cpu_seconds
from coldbrew.control.store import Store
from coldbrew.metering import statistics
from coldbrew.metering.meter import CpuReadings, Meter, samples_from_snapshot
from coldbrew.metering.prometheus import registry_for
from coldbrew.metering.query import metrics_report, open_readonly
from coldbrew.metering.records import MeterRecord, Outcome
from coldbrew.metering.statistics import BY_NAME, ENDPOINTS, Series


def _record(i: int, t: float, variant: str = "AllTraffic") -> MeterRecord:
    kinds = [(200, None), (424, "ModelError"), (400, "ThrottlingException"), (500, "InternalFailure")]
    status, code = kinds[i % 4] if i % 10 == 0 else (200, None)
    return MeterRecord(
        endpoint="ep",
        variant=variant,
        started_at=t,
        model_latency_us=1000 + i % 7,
        overhead_latency_us=50,
        cold_start=i % 100 == 0,
        setup_us=30_000 if i % 100 == 0 else 0,
        memory_mb=2048,
        serverless=True,
        bytes_in=100,
        bytes_out=10,
        status=status,
        error_code=code,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "coldbrew.db"
    Store(path).close()  # migrated
    return path


def test_concurrent_records_aggregate_exactly(db: Path) -> None:
    snapshot = [
        {
            "endpoint": "ep",
            "variant": "AllTraffic",
            "serverless": True,
            "memory_mb": 2048,
            "max_concurrency": 4,
            "environments": [
                {"memory_mb": 2048, "in_flight": 1, "rss_bytes": 512 * 2**20},
                {"memory_mb": 2048, "in_flight": 0, "rss_bytes": 512 * 2**20},
            ],
        }
    ]
    meter = Meter(db, flush_interval_s=0.05, sample_interval_s=0.05, snapshot=lambda: snapshot)
    meter.start()
    base = time.time() // 60 * 60 - 120  # two whole minutes back, so records span minute boundaries
    threads, per_thread = 8, 2500
    expected = [_record(i, base + (i % 150)) for i in range(threads * per_thread)]

    def work(k: int) -> None:
        for r in expected[k::threads]:
            meter.record(r)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    time.sleep(0.3)
    meter.close()

    conn = open_readonly(db)
    assert conn.execute("SELECT count(*) FROM meter_records").fetchone()[0] == len(expected)
    sums = conn.execute(
        "SELECT sum(invocations), sum(errors_4xx), sum(errors_5xx), sum(model_errors), sum(cold_starts), "
        "sum(model_latency_us), sum(billed_mb_ms), sum(bytes_in), sum(setup_us) FROM meter_minutes"
    ).fetchone()
    assert tuple(sums) == (
        len(expected),
        sum(r.status == 400 for r in expected),
        sum(r.status == 500 for r in expected),
        sum(r.error_code == "ModelError" for r in expected),
        sum(r.cold_start for r in expected),
        sum(r.model_latency_us for r in expected),
        sum(r.billed_mb_ms for r in expected),
        100 * len(expected),
        sum(r.setup_us for r in expected),
    )
    # Per minute, too.
    for minute, count in conn.execute("SELECT minute, invocations FROM meter_minutes WHERE invocations > 0"):
        assert count == sum(1 for r in expected if int(r.started_at // 60 * 60) == minute)
    report = metrics_report(conn, "ep", base, 3600, now=base + 200)
    assert sum(p["Invocations"] for p in report["Datapoints"]) == len(expected)
    sampled = [p for p in report["Datapoints"] if p["MemoryUtilization"]["Average"] is not None]
    assert sampled and sampled[-1]["MemoryUtilization"]["Average"] == pytest.approx(25.0)
    assert sampled[-1]["ServerlessConcurrentExecutionsUtilization"]["Maximum"] == pytest.approx(0.25)


def _variant(serverless: bool, cpu: dict[int, float | None]) -> dict[str, object]:
    return {
        "endpoint": "ep", "variant": "sv" if serverless else "iv", "serverless": serverless,
        "memory_mb": 2048, "max_concurrency": 2,
        "environments": [
            {"id": i, "memory_mb": 2048, "in_flight": 0, "rss_bytes": 0, "cpu_seconds": used}
            for i, used in cpu.items()
        ],
    }  # fmt: skip


Readings = list[tuple[float, dict[int, float | None]]]


def _cpu(readings: Readings, serverless: bool = False) -> list[float | None]:
    """CPUUtilization of each sample of one variant, from fake (time, {environment: cpu_seconds})."""
    seen: set[object] = set()
    cpu: CpuReadings = {}
    out = []
    for now, used in readings:
        (sample,) = samples_from_snapshot([_variant(serverless, used)], seen, cpu, now)
        out.append(sample.cpu_utilization)
    return out


def test_cpu_utilization_sums_each_environments_cpu_seconds_over_the_interval() -> None:
    # Two environments ("instances"): one busy on 1.5 cores, one on half a core, then one exits.
    readings: Readings = [
        (100.0, {1: 10.0, 2: 3.0}),  # first reading: no interval yet
        (100.5, {1: 10.75, 2: 3.25}),  # 150% + 50%
        (101.5, {1: 12.25, 2: 3.25}),  # 150% + idle
        (102.0, {1: 12.25, 2: None}),  # 2 exited: contributes nothing, 1 idle
        (102.5, {1: 12.0, 3: 0.5}),  # 1 went back (a reaped child's time gone), 3 is new: nothing
        (103.0, {1: 12.5, 3: 0.5}),  # 100% + idle
        (103.5, {}),  # no environment left
    ]
    assert _cpu(readings) == [None, pytest.approx(200.0), pytest.approx(150.0), 0.0, None, 100.0, None]
    # SageMaker publishes CPUUtilization for instance variants only.
    assert _cpu(readings, serverless=True) == [None] * len(readings)


def test_cpu_seconds_of_a_live_process_and_none_of_an_exited_one() -> None:
    assert (cpu_seconds(os.getpid()) or 0) > 0
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert cpu_seconds(child.pid) is None


def test_cpu_utilization_is_served_for_instance_variants_only(db: Path) -> None:
    clock = iter([float(t) for t in range(1000)])
    used = [0.0]

    def snapshot() -> list[dict[str, object]]:
        used[0] += 0.25  # a quarter of a core per (fake) second on each of two environments
        return [_variant(False, {1: used[0], 2: used[0]}), _variant(True, {1: 1.0})]

    meter = Meter(db, snapshot=snapshot, clock=lambda: 1_800_000_000.0, monotonic=lambda: next(clock))
    for _ in range(5):
        meter.sample()
    meter.close()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    metric = BY_NAME[(ENDPOINTS, "CPUUtilization")]
    assert metric.unit == "Percent"
    (point,) = statistics.read(conn, Series(metric, "ep", "iv", 1_800_000_000 - 60, 1_800_000_060, 120))
    assert (point.sample_count, point.average, point.minimum, point.maximum) == (4, 50.0, 50.0, 50.0)
    assert statistics.read(conn, Series(metric, "ep", "sv", 1_800_000_000 - 60, 1_800_000_060, 120)) == []
    listed = {(m.name, variant) for m, _, variant in statistics.active(conn, 0)}
    assert ("CPUUtilization", "iv") in listed and ("CPUUtilization", "sv") not in listed


def test_retention_prunes_records_not_aggregates(db: Path) -> None:
    now = time.time()
    meter = Meter(db, retention_days=1, clock=lambda: now)
    meter.record(_record(1, now - 3 * 86400))
    meter.record(_record(2, now - 60))
    meter.flush()
    assert meter.prune(now) == 1
    meter.close()
    conn = open_readonly(db)
    assert conn.execute("SELECT count(*) FROM meter_records").fetchone()[0] == 1
    assert conn.execute("SELECT sum(invocations) FROM meter_minutes").fetchone()[0] == 2


def test_prometheus_output_parses_with_cloudwatch_names(db: Path) -> None:
    meter = Meter(db)
    for i in range(20):
        meter.record(_record(i, time.time()))
    meter.flush()
    text = generate_latest(registry_for(meter)).decode()
    meter.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    labels = {"EndpointName": "ep", "VariantName": "AllTraffic"}

    def value(family: str, sample: str, **extra: str) -> float:
        return next(
            s.value for s in families[family].samples if s.name == sample and s.labels == {**labels, **extra}
        )

    assert value("sagemaker_Invocations", "sagemaker_Invocations_total") == 20
    assert (
        value("sagemaker_Invocation4XXErrors", "sagemaker_Invocation4XXErrors_total") == 1
    )  # i = 10: throttled
    assert value("sagemaker_InvocationModelErrors", "sagemaker_InvocationModelErrors_total") == 0
    assert families["sagemaker_ModelLatency_microseconds"].type == "histogram"
    # The throttled invocation never reached the model: it has no latency.
    assert value("sagemaker_ModelLatency_microseconds", "sagemaker_ModelLatency_microseconds_count") == 19
    assert value("sagemaker_ModelSetupTime_microseconds", "sagemaker_ModelSetupTime_microseconds_count") == 1
    for name in (
        "Invocation4XXErrors",
        "Invocation5XXErrors",
        "MemoryUtilization",
        "ServerlessConcurrentExecutionsUtilization",
        "OverheadLatency_microseconds",
    ):
        assert f"sagemaker_{name}" in families


def test_records_from_what_the_gateway_knows() -> None:
    facts = {"endpoint": "ep", "variant": "v", "started_at": 1.0, "memory_mb": 2048, "serverless": True}
    cold = MeterRecord.answered(
        **facts,
        total_us=250_000,
        model_latency_us=2_000,
        cold_start=True,
        setup_ms=240.5,
        bytes_in=10,
        bytes_out=20,
    )
    # A cold start's setup is overhead, as on SageMaker Serverless; the model's time is billed.
    assert (cold.model_latency_us, cold.overhead_latency_us, cold.setup_us) == (2_000, 248_000, 240_500)
    assert (cold.status, cold.error_code, cold.billed_mb_ms) == (200, None, 2048 * 2)

    def failed(code: str, status: int) -> MeterRecord:
        return MeterRecord.failed(
            **facts, total_us=5_000, bytes_in=10, bytes_out=30, status=status, error_code=code
        )

    # The model held the worker for the whole of a ModelError; a refusal never reached it.
    model_error, throttled = failed("ModelError", 424), failed("ThrottlingException", 400)
    assert (model_error.model_latency_us, model_error.overhead_latency_us) == (5_000, 0)
    assert (throttled.model_latency_us, throttled.overhead_latency_us) == (0, 5_000)
    assert not model_error.cold_start and model_error.setup_us == 0
    assert (model_error.outcome, throttled.outcome) == (Outcome.MODEL_ERROR, Outcome.CLIENT_ERROR)
    # On --backend ray a failed invocation names its node as an answered one does (issue 16).
    on_node = MeterRecord.failed(
        **facts, total_us=5_000, bytes_in=10, bytes_out=30, status=424, error_code="ModelError", node="n1"
    )
    assert (on_node.node, model_error.node) == ("n1", None)
