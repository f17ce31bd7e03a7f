"""One URL for everything a SageMaker user's scripts call, with only ``AWS_ENDPOINT_URL`` set:
upload a model with ``aws s3 cp``, deploy it from ``s3://``, invoke it, and read its ModelLatency
from CloudWatch and its log lines from CloudWatch Logs, all on coldbrew's one port."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from tests.support import ColdbrewServer, sklearn_archive


@pytest.fixture(scope="module")
def one_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdbrewServer]:
    server = ColdbrewServer(tmp_path_factory.mktemp("one-url") / "data").start()
    yield server
    server.stop()


def _env(server: ColdbrewServer, tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "AWS_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": "any",
        "AWS_SECRET_ACCESS_KEY": "any",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }


def _aws(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "awscli", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_upload_deploy_invoke_and_read_metrics_and_logs_on_one_url(
    one_url: ColdbrewServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(one_url, tmp_path)
    for name, value in env.items():
        if name != "PATH":
            monkeypatch.setenv(name, value)
    archive, model = sklearn_archive(tmp_path / "model.tar.gz")
    _aws(env, "s3", "mb", "s3://models")
    _aws(env, "s3", "cp", str(archive), "s3://models/rf/model.tar.gz")
    assert "model.tar.gz" in _aws(env, "s3", "ls", "s3://models/rf/")

    # No endpoint_url anywhere below: boto3 reads AWS_ENDPOINT_URL, as a user's script would.
    session = boto3.session.Session()
    sm, runtime = session.client("sagemaker"), session.client("sagemaker-runtime")
    sm.create_model(
        ModelName="one-url",
        PrimaryContainer={"Image": "coldbrew/sklearn", "ModelDataUrl": "s3://models/rf/model.tar.gz"},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/any",
    )
    sm.create_endpoint_config(
        EndpointConfigName="one-url",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "one-url",
                             "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 2}}],
    )  # fmt: skip
    sm.create_endpoint(EndpointName="one-url", EndpointConfigName="one-url")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="one-url", WaiterConfig={"Delay": 0.2})

    rows = np.zeros((1, 10))
    started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    for _ in range(5):
        reply = runtime.invoke_endpoint(EndpointName="one-url", Body=json.dumps(rows.tolist()),
                                        ContentType="application/json")  # fmt: skip
        np.testing.assert_allclose(json.loads(reply["Body"].read()), model.predict(rows))

    cloudwatch = session.client("cloudwatch")
    query: dict[str, Any] = {
        "Namespace": "AWS/SageMaker",
        "MetricName": "ModelLatency",
        "Dimensions": [
            {"Name": "EndpointName", "Value": "one-url"},
            {"Name": "VariantName", "Value": "AllTraffic"},
        ],
        "StartTime": started,
        "EndTime": started + datetime.timedelta(minutes=10),
        "Period": 600,
    }
    # CloudWatch takes Statistics or ExtendedStatistics in one call, not both.
    [point] = cloudwatch.get_metric_statistics(**query, Statistics=["SampleCount", "Average"])["Datapoints"]
    assert point["SampleCount"] == 5 and point["Unit"] == "Microseconds"
    [tail] = cloudwatch.get_metric_statistics(**query, ExtendedStatistics=["p99"])["Datapoints"]
    assert 0 < point["Average"] <= tail["ExtendedStatistics"]["p99"]

    logs = session.client("logs")
    group = "/aws/sagemaker/Endpoints/one-url"
    deadline = time.monotonic() + 15  # the collector writes off the invoke path, in batches
    while True:
        events = logs.filter_log_events(logGroupName=group)["events"]
        if events or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert events, f"no events in {group}"
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert all(s["logStreamName"].startswith("AllTraffic/") for s in streams)

    # The AWS CLI reads the same metric with the same one setting.
    cli = json.loads(
        _aws(
            env,
            "cloudwatch",
            "get-metric-statistics",
            "--namespace",
            "AWS/SageMaker",
            "--metric-name",
            "Invocations",
            "--dimensions",
            "Name=EndpointName,Value=one-url",
            "Name=VariantName,Value=AllTraffic",
            "--start-time",
            started.isoformat(),
            "--end-time",
            (started + datetime.timedelta(minutes=10)).isoformat(),
            "--period",
            "600",
            "--statistics",
            "Sum",
        )  # fmt: skip
    )
    assert [p["Sum"] for p in cli["Datapoints"]] == [5.0]
