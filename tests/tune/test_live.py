"""``coldbrew tune`` against a real server on loopback: the report's figures are the meter's."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from html import escape
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coldbrew.metering.prices import load_prices
from coldbrew.tune.pricing import price_serverless
from tests.support import REPO, ColdbrewServer, sklearn_archive

MODEL = "tune-forest"
MEMORY = [1024, 2048]
CONCURRENCY = [1, 2]
INVOCATIONS = 15


def meter_totals(server: ColdbrewServer) -> dict[tuple[str, str], float]:
    """(metric, endpoint) -> value, for the counters of the server's /metrics."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics", timeout=10).text):
        for sample in family.samples:
            endpoint = sample.labels.get("EndpointName")
            if endpoint and sample.name.endswith("_total"):
                out[(family.name, endpoint)] = out.get((family.name, endpoint), 0.0) + sample.value
    return out


def cloudwatch_sum(cw: Any, metric: str, endpoint: str, statistic: str, since: float) -> float:
    points = cw.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName=metric,
        Dimensions=[
            {"Name": "EndpointName", "Value": endpoint},
            {"Name": "VariantName", "Value": "AllTraffic"},
        ],
        StartTime=since - 120,
        EndTime=time.time() + 120,
        Period=60,
        Statistics=[statistic],
    )["Datapoints"]
    return float(sum(p[statistic] for p in points))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("tune")
    server = ColdbrewServer(base / "data").start()
    try:
        archive, _ = sklearn_archive(base / "model.tar.gz")
        server.client("sagemaker").create_model(
            ModelName=MODEL,
            PrimaryContainer={"Image": "coldbrew/sklearn", "ModelDataUrl": f"file://{archive}"},
            ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew",
        )
        (base / "row.csv").write_text("0.03,0.05,0.06,0.02,-0.04,-0.03,-0.04,0.0,0.02,-0.02\n")
        yield server, base
    finally:
        server.stop(timeout=90)  # a loaded machine may take a while to drain and stop


def tune_command(base: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "coldbrew", "tune", MODEL, "--payload", str(base / "row.csv"), *args]


def tune_env(server: ColdbrewServer) -> dict[str, str]:
    env = {**os.environ, "COLDBREW_URL": server.url, "COLUMNS": "200"}
    env.update(AWS_ACCESS_KEY_ID="any", AWS_SECRET_ACCESS_KEY="any", AWS_DEFAULT_REGION="us-east-1")
    return env


@pytest.fixture(scope="module")
def run(server: Any) -> Any:
    server, base = server
    out = base / "report"
    started = time.time()
    # fmt: off
    command = tune_command(
        base, "--memory", *map(str, MEMORY), "--concurrency", *map(str, CONCURRENCY),
        "--invocations", str(INVOCATIONS), "--latency-target-ms", "10000", "--rate", "2000000",
        "--out", str(out),
    )
    # fmt: on
    done = subprocess.run(
        command,
        env=tune_env(server),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr + server.log()[-3000:]
    return server, out, done, started


def test_report_counts_and_durations_are_the_meters(run: Any) -> None:
    server, out, _done, started = run
    report = json.loads((out / "tune.json").read_text())
    assert [c["memory_mb"] for c in report["configs"]] == MEMORY
    totals = meter_totals(server)
    cw = server.client("cloudwatch")
    prices = load_prices()
    for config in report["configs"]:
        name = config["endpoint"]
        levels = config["levels"]
        assert [level["concurrency"] for level in levels] == CONCURRENCY
        assert all(level["sent"] == INVOCATIONS for level in levels)
        # What tune says it sent: the cold start, each level's warm-up, the measured ones.
        sent = 1 + sum(level["sent"] + level["warmup_sent"] for level in levels)
        assert config["sent"] == sent
        assert config["errors"] == 0
        # The meter, read here independently of tune: /metrics and CloudWatch's statistics.
        assert totals[("sagemaker_Invocations", name)] == sent
        assert config["meter"]["invocations"] == sent
        assert cloudwatch_sum(cw, "Invocations", name, "Sum", started) == sent
        assert cloudwatch_sum(cw, "ModelLatency", name, "SampleCount", started) == sent
        # The first invocation came after a scale to zero: the meter counted it as a cold start.
        assert config["scaled_to_zero"] is True
        assert config["cold_start_metered"] is True
        assert totals[("sagemaker_ColdStarts", name)] >= 1
        billed = totals[("sagemaker_ServerlessBilledGBSeconds", name)]
        assert config["meter"]["billed_gb_seconds"] == pytest.approx(billed)
        assert config["billing_source"] == "meter"
        billed_ms = config["billed_ms_per_invocation"]
        assert billed_ms == pytest.approx(billed * 1000 / (config["memory_mb"] / 1024) / sent)
        # Billing rounds each invocation up to the millisecond: the mean is within 1 ms of the mean
        # ModelLatency CloudWatch reports (in microseconds).
        mean_ms = cloudwatch_sum(cw, "ModelLatency", name, "Sum", started) / sent / 1000
        assert mean_ms <= billed_ms <= mean_ms + 1
        expected = price_serverless(
            config["memory_mb"],
            billed_ms,
            totals[("sagemaker_BytesIn", name)] / sent,
            totals[("sagemaker_BytesOut", name)] / sent,
            prices,
            2_000_000,
        )
        assert config["pricing"]["cost_per_million"] == pytest.approx(expected.cost_per_million)
        assert config["pricing"]["monthly_cost"] == pytest.approx(expected.cost_per_million * 2)
        assert config["cold_start_ms"] is not None
    # A 10 s target is met by both sizes: the cheaper one (per million) is recommended.
    cheapest = min(report["configs"], key=lambda c: c["pricing"]["cost_per_million"])
    assert report["recommendation"]["memory_mb"] == cheapest["memory_mb"]


def test_every_endpoint_it_made_is_gone(run: Any) -> None:
    server, out, _done, _started = run
    report = json.loads((out / "tune.json").read_text())
    sm = server.client("sagemaker")
    made = {c["endpoint"] for c in report["configs"]}
    assert len(made) == len(MEMORY)
    assert not made & {e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]}
    assert not made & {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]}
    assert report["cleanup_problems"] == []
    # Its copy of the model (with a short idle timeout) is gone; the model itself is kept.
    models = {m["ModelName"] for m in sm.list_models()["Models"]}
    assert models == {MODEL}


def test_html_csv_and_json_agree(run: Any) -> None:
    _server, out, done, _started = run
    report = json.loads((out / "tune.json").read_text())
    with (out / "tune.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(MEMORY) * len(CONCURRENCY)
    html = (out / "tune.html").read_text()
    assert "uPlot" in html and 'id="cost"' in html and 'id="latency"' in html
    assert escape(report["recommendation"]["reason"]) in html
    for config in report["configs"]:
        for level in config["levels"]:
            row = next(
                r
                for r in rows
                if int(r["memory_mb"]) == config["memory_mb"]
                and int(r["concurrency"]) == level["concurrency"]
            )
            assert float(row["p99_ms"]) == pytest.approx(level["latency"]["p99_ms"])
            assert float(row["p50_ms"]) == pytest.approx(level["latency"]["p50_ms"])
            assert int(row["sent"]) == level["sent"]
            assert float(row["cost_per_million"]) == pytest.approx(config["pricing"]["cost_per_million"])
            assert int(row["meter_invocations"]) == config["meter"]["invocations"]
            assert f"{level['latency']['p99_ms']:,.1f}" in html
        assert f"{config['pricing']['cost_per_million']:,.4f}" in html
    # The plots' data is embedded: each memory size's cost point is named in the legend data.
    for memory in MEMORY:
        assert f'"label": "{memory:,} MB"' in html
    # The console: the summary table and the recommendation.
    assert "recommendation:" in done.stdout and "1,024" in done.stdout
    # This machine's cores are stated: 1,024 and 2,048 MB both get one thread (round(2048/1769) = 1).
    assert any("1,024, 2,048 MB all run with 1 thread" in note for note in report["notes"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_deletes_what_it_made(server: Any, sig: int) -> None:
    server, base = server
    sm = server.client("sagemaker")
    command = tune_command(
        base, "--memory", "1024", "2048", "--invocations", "100000", "--out", str(base / "cut")
    )
    process = subprocess.Popen(
        command, env=tune_env(server), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # Interrupted while it measures: once its endpoint has served (the meter has counted) a few.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            made = [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]]
            totals = meter_totals(server)
            if made and totals.get(("sagemaker_Invocations", made[0]), 0) >= 20:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("tune did not start measuring within 60 s")
        process.send_signal(sig)
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert {m["ModelName"] for m in sm.list_models()["Models"]} == {MODEL}
