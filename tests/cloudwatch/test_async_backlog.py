"""The backlog metrics of an asynchronous endpoint (ApproximateBacklogSize and the like, dimension
EndpointName only), from a real server queueing real requests for a real, slow model: on
``GET /metrics`` and through CloudWatch's API with boto3. And the statistics over their per-minute
aggregates, written by the sampler into a store-migrated database."""

from __future__ import annotations

import math
import re
import sqlite3
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coldbrew.async_inference.metrics import BacklogReading, BacklogSampler
from coldbrew.control.store import Store
from coldbrew.metering import statistics
from coldbrew.metering.statistics import BY_NAME, SAGEMAKER, Percentile, Series
from tests.cloudwatch.clients import cloudwatch, dimensions
from tests.support import ColdbrewServer, sklearn_archive, tar_gz, wait_for_status

ENDPOINT = "cw-async"
BUCKET = "cw-async-data"
REQUESTS = 30
LOAD_S = 3.0
"""model_fn's sleep: the cold start during which the backlog has no capacity."""
ROW = ",".join(["0.01"] * 10)
BY_ENDPOINT = [{"Name": "EndpointName", "Value": ENDPOINT}]
"""The backlog metrics' one dimension."""

# The forest, loaded slowly and answering each request in 0.1 s: at MaxConcurrency 1 the queue
# drains in some three seconds.
INFERENCE = f"""
import os
import time

import joblib


def model_fn(model_dir):
    time.sleep({LOAD_S})
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def predict_fn(data, model):
    time.sleep(0.1)
    return model.predict(data)
"""

BACKLOG_METRICS = (
    "ApproximateBacklogSize",
    "ApproximateBacklogSizePerInstance",
    "ApproximateAgeOfOldestRequest",
    "HasBacklogWithoutCapacity",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdbrewServer]:
    env = {"COLDBREW_ASYNC_METRICS_INTERVAL_S": "0.25"}
    srv = ColdbrewServer(tmp_path_factory.mktemp("cw-async") / "data", env=env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def slow_forest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slow-forest")
    archive, _ = sklearn_archive(root / "forest.tar.gz")
    with tarfile.open(archive) as tar:
        member = tar.extractfile("model.joblib")
        assert member is not None
        model = member.read()
    path = root / "model.tar.gz"
    path.write_bytes(tar_gz({"model.joblib": model, "code/inference.py": INFERENCE.encode()}))
    return path


def scrape(server: ColdbrewServer) -> dict[str, float]:
    """The backlog gauges and environments of ENDPOINT on ``GET /metrics``, by metric name."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(sagemaker_\w+|coldbrew_scaling_environments)\{([^}]*)\} (\S+)$", line)
        if match is None or f'EndpointName="{ENDPOINT}"' not in match.group(2):
            continue
        name, labels, value = match.groups()
        if name == "coldbrew_scaling_environments":
            found["environments"] = found.get("environments", 0.0) + float(value)
        elif (metric := name.removeprefix("sagemaker_").removesuffix("_seconds")) in BACKLOG_METRICS:
            assert "VariantName" not in labels, line
            found[metric] = float(value)
    return found


def until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def statistics_of(cw: Any, metric: str, start: float, end: float, **kwargs: Any) -> dict[str, Any]:
    """The one datapoint of a period holding [start, end]."""
    first, last = math.floor(start / 60) * 60 - 60, math.ceil(end / 60) * 60 + 60
    answer = cw.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName=metric,
        Dimensions=BY_ENDPOINT,
        StartTime=first,
        EndTime=last,
        Period=last - first,
        **kwargs,
    )
    assert answer["Label"] == metric
    [point] = answer["Datapoints"]
    return dict(point)


ALL = ["SampleCount", "Sum", "Average", "Minimum", "Maximum"]


def test_backlog_metrics_while_the_queue_fills_and_drains(
    server: ColdbrewServer, slow_forest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sm, s3, runtime = server.client("sagemaker"), server.client("s3"), server.client("sagemaker-runtime")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="in/row.csv", Body=ROW.encode())
    sm.create_model(
        ModelName=ENDPOINT,
        PrimaryContainer={
            "Image": "coldbrew/sklearn",
            "ModelDataUrl": slow_forest.as_uri(),
            # Every cold start loads the model (its slow load is the window the test reads).
            "Environment": {"COLDBREW_IDLE_TIMEOUT_S": "0.5", "COLDBREW_TEMPLATES": "false"},
        },
        ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew",
    )
    sm.create_endpoint_config(
        EndpointConfigName=f"{ENDPOINT}-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": ENDPOINT,
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/out"}},
    )
    sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=f"{ENDPOINT}-config")
    wait_for_status(sm, ENDPOINT, "InService")
    start = time.time()

    # Served with an empty queue: 0s, and the load check's environment released.
    until(
        lambda: scrape(server).get("environments", 1) == 0 and "ApproximateBacklogSize" in scrape(server),
        15,
        "the endpoint's backlog gauges, and no environment",
    )
    idle = scrape(server)
    assert {k: v for k, v in idle.items() if k != "environments"} == {
        "ApproximateBacklogSize": 0,
        "ApproximateBacklogSizePerInstance": 0,
        "ApproximateAgeOfOldestRequest": 0,
        "HasBacklogWithoutCapacity": 0,
    }

    for _ in range(REQUESTS):
        runtime.invoke_endpoint_async(
            EndpointName=ENDPOINT, InputLocation=f"s3://{BUCKET}/in/row.csv", ContentType="text/csv"
        )
    # The queue waits for the first environment's slow load: a backlog without capacity.
    seen: list[dict[str, float]] = []

    def cold() -> bool:
        seen.append(scrape(server))
        return seen[-1]["HasBacklogWithoutCapacity"] == 1

    until(cold, LOAD_S + 2, "HasBacklogWithoutCapacity 1 during the cold start")
    cold_start = seen[-1]
    assert 0 < cold_start["ApproximateBacklogSize"] <= REQUESTS
    # No environment: per instance is the backlog itself.
    assert cold_start["ApproximateBacklogSizePerInstance"] == cold_start["ApproximateBacklogSize"]
    assert cold_start["ApproximateAgeOfOldestRequest"] > 0

    # Served at MaxConcurrency 1: a backlog with capacity, one environment, shrinking.
    def serving() -> bool:
        seen.append(scrape(server))
        return seen[-1]["HasBacklogWithoutCapacity"] == 0

    until(serving, LOAD_S + 10, "the environment ready")
    warm = seen[-1]
    if warm["ApproximateBacklogSize"] > 0:
        assert (
            warm["ApproximateBacklogSizePerInstance"] == warm["ApproximateBacklogSize"] / warm["environments"]
        )

    def drained() -> bool:
        seen.append(scrape(server))
        return seen[-1]["ApproximateBacklogSize"] == 0

    until(drained, 30, "the queue drained")
    # All of them wait out the cold start (longer than the dispatcher's one-second sweep), then the
    # backlog only shrinks.
    sizes = [s["ApproximateBacklogSize"] for s in seen]
    assert max(sizes) == REQUESTS
    after_peak = sizes[sizes.index(REQUESTS) :]
    assert sorted(after_peak, reverse=True) == after_peak
    assert seen[-1]["ApproximateAgeOfOldestRequest"] == 0 and seen[-1]["HasBacklogWithoutCapacity"] == 0
    outputs = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"]]
    assert len(outputs) == REQUESTS and not [k for k in outputs if k.endswith("-error.out")], outputs
    time.sleep(0.5)  # every sample written from now on is of the empty queue
    drained_at = time.time()

    # CloudWatch, with EndpointName as the one dimension (as SageMaker publishes them).
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    for variable in ("AWS_ENDPOINT_URL_CLOUDWATCH", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    cw = cloudwatch(None, tmp_path)
    backlog = statistics_of(cw, "ApproximateBacklogSize", start, drained_at, Statistics=ALL)
    assert backlog["Unit"] == "None"
    assert backlog["Maximum"] == REQUESTS and backlog["Minimum"] == 0
    assert 0 < backlog["Average"] < backlog["Maximum"]
    age = statistics_of(cw, "ApproximateAgeOfOldestRequest", start, drained_at, Statistics=["Maximum"])
    assert age["Unit"] == "Seconds" and age["Maximum"] >= LOAD_S / 2
    per_instance = statistics_of(
        cw, "ApproximateBacklogSizePerInstance", start, drained_at, Statistics=["Maximum"]
    )
    assert per_instance["Maximum"] == backlog["Maximum"]  # the largest backlog had no environment
    capacity = statistics_of(cw, "HasBacklogWithoutCapacity", start, drained_at, Statistics=ALL, Unit="None")
    assert (capacity["Minimum"], capacity["Maximum"]) == (0, 1)
    assert 0 < capacity["Sum"] < capacity["SampleCount"]
    top = statistics_of(cw, "HasBacklogWithoutCapacity", start, drained_at, ExtendedStatistics=["p100"])
    assert top["ExtendedStatistics"] == {"p100": 1}  # exact: the samples are 0s and 1s

    # Once drained, every new sample is 0: the sums stay, the sample counts grow.
    before = {
        name: statistics_of(cw, name, start, drained_at, Statistics=["Sum", "SampleCount"])
        for name in BACKLOG_METRICS
    }
    time.sleep(1.0)
    for name in BACKLOG_METRICS:
        after = statistics_of(cw, name, start, time.time(), Statistics=["Sum", "SampleCount"])
        assert after["SampleCount"] > before[name]["SampleCount"], name
        assert after["Sum"] == pytest.approx(before[name]["Sum"]), name
    # Only the endpoint's dimension names them: with a variant too, no such metric.
    assert cw.get_metric_statistics(
        Namespace="AWS/SageMaker", MetricName="ApproximateBacklogSize", Dimensions=dimensions(ENDPOINT),
        StartTime=start - 120, EndTime=time.time() + 60, Period=60, Statistics=["Maximum"],
    )["Datapoints"] == []  # fmt: skip
    data = cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "backlog",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SageMaker",
                        "MetricName": "ApproximateBacklogSize",
                        "Dimensions": BY_ENDPOINT,
                    },
                    "Period": 60,
                    "Stat": "Maximum",
                },
            }
        ],
        StartTime=start - 120,
        EndTime=time.time() + 60,
    )
    [result] = data["MetricDataResults"]
    assert max(result["Values"]) == backlog["Maximum"]
    listed = cw.list_metrics(Namespace="AWS/SageMaker", Dimensions=BY_ENDPOINT)
    async_listed = {
        m["MetricName"]: m["Dimensions"] for m in listed["Metrics"] if m["MetricName"] in BACKLOG_METRICS
    }
    assert async_listed == dict.fromkeys(BACKLOG_METRICS, BY_ENDPOINT)
    with_variant = cw.list_metrics(Namespace="AWS/SageMaker", Dimensions=[{"Name": "VariantName"}])
    assert not {m["MetricName"] for m in with_variant["Metrics"]} & set(BACKLOG_METRICS)


# --- the aggregates and their statistics, without a server ----------------------------------------

NOW = 1_800_000_000.0


def test_samples_aggregate_per_minute_and_read_as_cloudwatch_statistics(tmp_path: Path) -> None:
    db = tmp_path / "coldbrew.db"
    Store(db).close()  # the store's migrations create the table
    samples = [
        (NOW, [BacklogReading("ep", 4, 12.5, 0), BacklogReading("other", 0, 0.0, 1)]),
        (NOW + 10, [BacklogReading("ep", 6, 22.5, 2)]),
        (NOW + 20, [BacklogReading("ep", 0, 0.0, 2)]),
        (NOW + 70, [BacklogReading("ep", 1, 1.0, 0)]),
    ]
    at = iter(t for t, _ in samples)
    batches = iter(b for _, b in samples)
    sampler = BacklogSampler(db, lambda: next(batches), clock=lambda: next(at))
    try:
        assert [sampler.sample() for _ in samples] == [2, 1, 1, 1]
    finally:
        sampler.close()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    minute = int(NOW // 60 * 60)

    def read(name: str, period: int, percentiles: list[Percentile] | None = None) -> list[Any]:
        series = Series(BY_NAME[(SAGEMAKER, name)], "ep", None, minute, minute + 180, period)
        return statistics.read(conn, series, percentiles or [])

    # NOW + 70 is in the next minute when NOW is within its minute's first 50 s.
    assert NOW - minute < 50
    first, second = read("ApproximateBacklogSize", 60)
    assert (first.timestamp, first.sample_count, first.total, first.minimum, first.maximum) == (
        minute, 3, 10, 0, 6,
    )  # fmt: skip
    assert (second.sample_count, second.total) == (1, 1)
    [whole] = read("ApproximateBacklogSizePerInstance", 180)
    assert (whole.sample_count, whole.total, whole.maximum) == (4, 4 + 3 + 0 + 1, 4)
    [age] = read("ApproximateAgeOfOldestRequest", 180)
    assert (age.minimum, age.maximum, age.total) == (0, 22.5, 36)
    [flag] = read("HasBacklogWithoutCapacity", 180, [Percentile("p50", 0.5), Percentile("p75", 0.75)])
    assert (flag.sample_count, flag.total) == (4, 2)  # backlog 4 and 1 with no environment
    assert flag.percentiles == {"p50": 0, "p75": 1}  # exact: the samples are 0s and 1s
    # No variant dimension: a series of the other endpoint is its own.
    other = Series(BY_NAME[(SAGEMAKER, "ApproximateBacklogSize")], "other", None, minute, minute + 180, 180)
    [quiet] = statistics.read(conn, other)
    assert (quiet.sample_count, quiet.maximum) == (1, 0)
    listed = [(m.name, e, v) for m, e, v in statistics.active(conn, minute) if m.table != "meter_minutes"]
    assert listed == sorted((name, e, None) for name in BACKLOG_METRICS for e in ("ep", "other"))
    assert statistics.active(conn, minute + 120) == []
    conn.close()
