"""CloudWatch metrics from a real server after real invocations of a real model, read with boto3
(each protocol) and the AWS CLI v1, configured only by ``AWS_ENDPOINT_URL``, and checked against
what was invoked and the raw latencies the meter recorded."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.cloudwatch.clients import PROTOCOLS, cloudwatch, dimensions
from tests.support import ColdbrewServer, deploy_serverless, wait_for_status

ROW = ",".join(["0.01"] * 10)
ENDPOINT = "cw-rf"


@dataclass(frozen=True)
class Traffic:
    server: ColdbrewServer
    answered: int
    model_errors: int
    throttled: int
    start: float
    end: float

    def raw(self, sql: str, *args: object) -> list[Any]:
        conn = sqlite3.connect(f"file:{self.server.data_dir / 'coldbrew.db'}?mode=ro", uri=True)
        try:
            return [row[0] for row in conn.execute(sql, args)]
        finally:
            conn.close()


@pytest.fixture(scope="module")
def traffic(server: ColdbrewServer, model_archive: tuple[Path, Any]) -> Traffic:
    sm = server.client("sagemaker")
    # No retries (a retried throttle would be answered, and metered twice): the client sees it all.
    runtime = boto3.client(
        "sagemaker-runtime", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="any",
        aws_secret_access_key="any", config=Config(retries={"total_max_attempts": 1}),
    )  # fmt: skip
    deploy_serverless(
        sm,
        ENDPOINT,
        model_archive[0].as_uri(),
        max_concurrency=1,
        environment={"COLDBREW_IDLE_TIMEOUT_S": "0.5"},
    )
    wait_for_status(sm, ENDPOINT, "InService")
    start = time.time()
    time.sleep(1.2)  # the load check's environment is released: the next invocation starts one

    def invoke(_: int) -> str:
        try:
            runtime.invoke_endpoint(EndpointName=ENDPOINT, Body=ROW, ContentType="text/csv")
            return "ok"
        except ClientError as error:
            return str(error.response["Error"]["Code"])

    outcomes = [invoke(i) for i in range(25)]
    with ThreadPoolExecutor(4) as pool:  # MaxConcurrency 1: some of these are throttled
        outcomes += list(pool.map(invoke, range(12)))
    with pytest.raises(runtime.exceptions.ModelError):
        runtime.invoke_endpoint(EndpointName=ENDPOINT, Body="not,numbers", ContentType="text/csv")
    assert set(outcomes) <= {"ok", "ThrottlingException"}
    return Traffic(
        server,
        answered=outcomes.count("ok"),
        model_errors=1,
        throttled=outcomes.count("ThrottlingException"),
        start=start,
        end=time.time(),
    )


@pytest.fixture
def endpoint_env(server: ColdbrewServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    for name in ("AWS_ENDPOINT_URL_CLOUDWATCH", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    yield


def _window(t: Traffic) -> dict[str, Any]:
    """One period holding all the traffic."""
    start = math.floor(t.start / 60) * 60 - 60
    end = math.ceil(t.end / 60) * 60 + 60
    return {"StartTime": start, "EndTime": end, "Period": end - start}


def _nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(round(p * len(ordered), 9))) - 1]


def _one(client: Any, metric: str, namespace: str = "AWS/SageMaker", **kwargs: Any) -> dict[str, Any]:
    datapoints = client.get_metric_statistics(
        Namespace=namespace, MetricName=metric, Dimensions=dimensions(ENDPOINT), **kwargs
    )["Datapoints"]
    assert len(datapoints) == 1, datapoints
    point: dict[str, Any] = datapoints[0]
    return point


ALL = ["SampleCount", "Sum", "Average", "Minimum", "Maximum"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_statistics_are_what_was_invoked(
    traffic: Traffic, endpoint_env: None, tmp_path: Path, protocol: str
) -> None:
    cw = cloudwatch(protocol, tmp_path)
    window = _window(traffic)
    metered = traffic.answered + traffic.model_errors + traffic.throttled

    invocations = _one(cw, "Invocations", Statistics=ALL, **window)
    assert (invocations["Sum"], invocations["SampleCount"]) == (metered, metered)
    assert (invocations["Average"], invocations["Minimum"], invocations["Maximum"]) == (1, 1, 1)
    assert invocations["Unit"] == "None"
    throttles = _one(cw, "Invocation4XXErrors", Statistics=["Sum", "SampleCount", "Average"], **window)
    assert (throttles["Sum"], throttles["SampleCount"]) == (traffic.throttled, metered)
    assert throttles["Average"] == pytest.approx(traffic.throttled / metered)
    assert _one(cw, "Invocation5XXErrors", Statistics=["Sum"], **window)["Sum"] == 0

    # Latencies, against the meter's raw records: answered invocations (ModelError included).
    latencies = traffic.raw(
        "SELECT model_latency_us FROM meter_records WHERE endpoint = ? AND variant = 'AllTraffic' "
        "AND (status = 200 OR error_code = 'ModelError')",
        ENDPOINT,
    )
    assert len(latencies) == traffic.answered + traffic.model_errors
    model = _one(cw, "ModelLatency", Statistics=ALL, **window)
    assert model["Unit"] == "Microseconds"
    assert model["SampleCount"] == len(latencies)
    assert model["Sum"] == sum(latencies)
    assert (model["Minimum"], model["Maximum"]) == (min(latencies), max(latencies))
    assert model["Average"] == pytest.approx(sum(latencies) / len(latencies))
    percentiles = _one(cw, "ModelLatency", ExtendedStatistics=["p50", "p90", "p99", "p99.9"], **window)
    expected = {
        name: _nearest_rank(latencies, float(name[1:]) / 100) for name in ("p50", "p90", "p99", "p99.9")
    }
    assert percentiles["ExtendedStatistics"] == expected

    overhead = traffic.raw(
        "SELECT overhead_latency_us FROM meter_records WHERE endpoint = ? AND variant = 'AllTraffic'",
        ENDPOINT,
    )
    o = _one(cw, "OverheadLatency", ExtendedStatistics=["p50"], **window)
    assert o["ExtendedStatistics"]["p50"] == _nearest_rank(overhead, 0.5)

    setups = traffic.raw(
        "SELECT setup_us FROM meter_records WHERE endpoint = ? AND cold_start = 1 AND variant = 'AllTraffic'",
        ENDPOINT,
    )
    assert setups, "the first invocation after the release was a cold start"
    setup = _one(cw, "ModelSetupTime", Statistics=["SampleCount", "Maximum"], **window)
    assert (setup["SampleCount"], setup["Maximum"]) == (len(setups), max(setups))

    memory = _one(
        cw, "MemoryUtilization", "/aws/sagemaker/Endpoints", Statistics=["Average", "Maximum"], **window
    )
    assert memory["Unit"] == "Percent" and 0 < memory["Average"] <= memory["Maximum"] <= 100
    concurrency = _one(cw, "ServerlessConcurrentExecutionsUtilization", Statistics=["Maximum"], **window)
    assert 0 <= concurrency["Maximum"] <= 1

    # What SageMaker does not publish for serverless variants.
    for namespace, name in [
        ("AWS/SageMaker", "InvocationsPerInstance"),
        ("AWS/SageMaker", "InvocationModelErrors"),
        ("/aws/sagemaker/Endpoints", "CPUUtilization"),
    ]:
        answer = cw.get_metric_statistics(
            Namespace=namespace,
            MetricName=name,
            Dimensions=dimensions(ENDPOINT),
            Statistics=["Sum"],
            **window,
        )
        assert answer["Datapoints"] == [] and answer["Label"] == name
    # A unit other than the metric's, or only one of its dimensions, names another metric: no data.
    assert cw.get_metric_statistics(
        Namespace="AWS/SageMaker", MetricName="ModelLatency", Dimensions=dimensions(ENDPOINT),
        Statistics=["Sum"], Unit="Milliseconds", **window,
    )["Datapoints"] == []  # fmt: skip
    assert cw.get_metric_statistics(
        Namespace="AWS/SageMaker", MetricName="Invocations", Dimensions=dimensions(ENDPOINT)[:1],
        Statistics=["Sum"], **window,
    )["Datapoints"] == []  # fmt: skip


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_get_metric_data_pages_and_orders(
    traffic: Traffic, endpoint_env: None, tmp_path: Path, protocol: str
) -> None:
    cw = cloudwatch(protocol, tmp_path)
    window = _window(traffic)
    metered = traffic.answered + traffic.model_errors + traffic.throttled
    metric = {"Namespace": "AWS/SageMaker", "MetricName": "Invocations", "Dimensions": dimensions(ENDPOINT)}
    queries = [
        {"Id": "calls", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Sum"}},
        {"Id": "hidden", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Sum"}, "ReturnData": False},
        {
            "Id": "p99",
            "Label": "model p99",
            "MetricStat": {"Metric": {**metric, "MetricName": "ModelLatency"}, "Period": 60, "Stat": "p99"},
        },
    ]
    pages = list(
        cw.get_paginator("get_metric_data").paginate(
            MetricDataQueries=queries,
            StartTime=window["StartTime"],
            EndTime=window["EndTime"],
            ScanBy="TimestampAscending",
            MaxDatapoints=1,
        )
    )
    calls = [r for page in pages for r in page["MetricDataResults"] if r["Id"] == "calls"]
    assert sum(sum(r["Values"]) for r in calls) == metered
    stamps = [t for r in calls for t in r["Timestamps"]]
    assert stamps == sorted(stamps) and len(stamps) == len(set(stamps))
    assert calls[-1]["StatusCode"] == "Complete"
    assert all(r["Id"] != "hidden" for page in pages for r in page["MetricDataResults"])
    p99 = [r for page in pages for r in page["MetricDataResults"] if r["Id"] == "p99"]
    assert p99[0]["Label"] == "model p99" and all(v > 0 for r in p99 for v in r["Values"])

    whole = cw.get_metric_data(
        MetricDataQueries=queries[:1], StartTime=window["StartTime"], EndTime=window["EndTime"]
    )
    (result,) = whole["MetricDataResults"]
    assert "NextToken" not in whole and result["StatusCode"] == "Complete"
    assert result["Timestamps"] == sorted(result["Timestamps"], reverse=True)  # TimestampDescending

    with pytest.raises(ClientError) as refused:
        cw.get_metric_data(
            MetricDataQueries=[*queries[:1], {"Id": "rate", "Expression": "calls / 60"}],
            StartTime=window["StartTime"],
            EndTime=window["EndTime"],
        )
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert "does not evaluate metric math" in refused.value.response["Error"]["Message"]
    with pytest.raises(cw.exceptions.InvalidNextToken):
        cw.get_metric_data(
            MetricDataQueries=queries[:1], StartTime=window["StartTime"], EndTime=window["EndTime"],
            NextToken="bm90IGEgdG9rZW4=",
        )  # fmt: skip


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_list_metrics_lists_what_sagemaker_publishes_for_serverless(
    traffic: Traffic, endpoint_env: None, tmp_path: Path, protocol: str
) -> None:
    cw = cloudwatch(protocol, tmp_path)
    listed = cw.list_metrics(Dimensions=[{"Name": "EndpointName", "Value": ENDPOINT}])["Metrics"]
    names = {(m["Namespace"], m["MetricName"]) for m in listed}
    assert names == {
        ("AWS/SageMaker", name)
        for name in (
            "Invocations",
            "Invocation4XXErrors",
            "Invocation5XXErrors",
            "ModelLatency",
            "OverheadLatency",
            "ModelSetupTime",
            "ServerlessConcurrentExecutionsUtilization",
        )
    } | {("/aws/sagemaker/Endpoints", "MemoryUtilization")}
    assert all(m["Dimensions"] == dimensions(ENDPOINT) for m in listed)
    only = cw.list_metrics(
        Namespace="/aws/sagemaker/Endpoints",
        Dimensions=[{"Name": "EndpointName", "Value": ENDPOINT}],
        RecentlyActive="PT3H",
    )["Metrics"]
    assert {m["MetricName"] for m in only} == {"MemoryUtilization"}
    assert cw.list_metrics(Dimensions=[{"Name": "EndpointName", "Value": "nobody"}])["Metrics"] == []
    assert cw.list_metrics(Dimensions=[{"Name": "InstanceId"}])["Metrics"] == []


BURN = """
import time


def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    until = time.perf_counter() + 0.5
    while time.perf_counter() < until:  # busy: half a second of one core's time
        pass
    return b"ok", "text/plain"
"""


def test_cpu_utilization_of_an_instance_variant(
    server: ColdbrewServer, traffic: Traffic, endpoint_env: None, tmp_path: Path
) -> None:
    (tmp_path / "burn" / "code").mkdir(parents=True)
    (tmp_path / "burn" / "code" / "inference.py").write_text(BURN)
    sm = server.client("sagemaker")
    name = "cw-cpu"
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": "coldbrew/sklearn", "ModelDataUrl": str(tmp_path / "burn")},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew",
    )
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name, "InstanceType": "ml.m5.large",
                             "InitialInstanceCount": 1}],
    )  # fmt: skip
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    wait_for_status(sm, name, "InService")
    runtime = server.client("sagemaker-runtime")
    start = time.time()
    for _ in range(5):
        runtime.invoke_endpoint(EndpointName=name, Body=b"x", ContentType="text/plain")
    cw = cloudwatch(None, tmp_path)
    window = {"StartTime": math.floor(start / 60) * 60 - 60, "EndTime": math.ceil(time.time() / 60) * 60 + 60}
    window["Period"] = window["EndTime"] - window["StartTime"]
    deadline = time.monotonic() + 10
    while True:  # the meter samples every 0.5 s and writes what it sampled in the next flush
        points = cw.get_metric_statistics(
            Namespace="/aws/sagemaker/Endpoints", MetricName="CPUUtilization", Dimensions=dimensions(name),
            Statistics=["Maximum", "Average", "SampleCount"], **window,
        )["Datapoints"]  # fmt: skip
        if (points and points[0]["Maximum"] > 10) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (point,) = points
    assert point["Unit"] == "Percent"
    assert 10 < point["Maximum"] <= 100 * (os.cpu_count() or 1), point
    assert 0 <= point["Average"] <= point["Maximum"]
    listed = cw.list_metrics(
        Namespace="/aws/sagemaker/Endpoints", Dimensions=[{"Name": "EndpointName", "Value": name}]
    )["Metrics"]
    assert {m["MetricName"] for m in listed} == {"MemoryUtilization", "CPUUtilization"}
    # The serverless endpoint has none, and none is listed for it.
    assert cw.get_metric_statistics(
        Namespace="/aws/sagemaker/Endpoints", MetricName="CPUUtilization", Dimensions=dimensions(ENDPOINT),
        Statistics=["Maximum"], **_window(traffic),
    )["Datapoints"] == []  # fmt: skip
    serverless = cw.list_metrics(
        Namespace="/aws/sagemaker/Endpoints", Dimensions=[{"Name": "EndpointName", "Value": ENDPOINT}]
    )["Metrics"]
    assert "CPUUtilization" not in {m["MetricName"] for m in serverless}
    sm.delete_endpoint(EndpointName=name)


def _aws(*args: str, server: ColdbrewServer, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "AWS_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": "any",
        "AWS_SECRET_ACCESS_KEY": "any",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(home / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [sys.executable, "-m", "awscli", *args, "--output", "json"],
        env=env, capture_output=True, text=True, timeout=120, cwd=home,
    )  # fmt: skip


def test_aws_cli_get_metric_statistics(traffic: Traffic, tmp_path: Path) -> None:
    window = _window(traffic)
    iso = {
        k: datetime.fromtimestamp(window[k], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for k in ("StartTime", "EndTime")
    }
    common = [
        "cloudwatch", "get-metric-statistics", "--namespace", "AWS/SageMaker",
        "--dimensions", f"Name=EndpointName,Value={ENDPOINT}", "Name=VariantName,Value=AllTraffic",
        "--start-time", iso["StartTime"], "--end-time", iso["EndTime"],
    ]  # fmt: skip
    done = _aws(
        *common, "--metric-name", "Invocations", "--period", str(window["Period"]), "--statistics", "Sum",
        server=traffic.server, home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (point,) = json.loads(done.stdout)["Datapoints"]
    assert point["Sum"] == traffic.answered + traffic.model_errors + traffic.throttled
    done = _aws(
        *common, "--metric-name", "ModelLatency", "--period", str(window["Period"]),
        "--extended-statistics", "p99", server=traffic.server, home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (point,) = json.loads(done.stdout)["Datapoints"]
    assert point["Unit"] == "Microseconds" and point["ExtendedStatistics"]["p99"] > 0
    done = _aws(
        *common, "--metric-name", "ModelLatency", "--period", "90", "--statistics", "Sum",
        server=traffic.server, home=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    assert "(InvalidParameterValue)" in done.stderr and "Period must be a multiple of 60" in done.stderr
