"""Metering through a real server: every invocation metered, errors included, and nothing lost to SIGKILL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import REPO, ColdbrewServer, deploy_serverless, wait_for_status

ROW = ",".join(["0.01"] * 10)


def _cli(*args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "coldbrew", *args, "--json"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def _prometheus(server: ColdbrewServer) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # Summed over variants: a request naming no existing variant is metered under variant "".
            if sample.labels.get("EndpointName") == "metered" and "le" not in sample.labels:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def test_metering_survives_sigkill_and_counts_errors(tmp_path: Path, model_archive: tuple[Path, Any]) -> None:
    data = tmp_path / "data"
    server = ColdbrewServer(data).start()
    try:
        sm, runtime = server.client("sagemaker"), server.client("sagemaker-runtime")
        deploy_serverless(
            sm,
            "Metered",
            f"file://{model_archive[0]}",
            memory=1024,
            max_concurrency=4,
            environment={"COLDBREW_IDLE_TIMEOUT_S": "0.5"},
        )
        wait_for_status(sm, "Metered", "InService")
        time.sleep(1.5)  # the load check's worker is released: the first invocation is a cold start

        def invoke(_: int) -> int:
            runtime.invoke_endpoint(EndpointName="Metered", Body=ROW, ContentType="text/csv")
            return 1

        # Concurrent load from several threads.
        with ThreadPoolExecutor(4) as pool:
            ok = sum(pool.map(invoke, range(60)))
        with pytest.raises(runtime.exceptions.ModelError):
            runtime.invoke_endpoint(EndpointName="Metered", Body="not,numbers", ContentType="text/csv")
        with pytest.raises(runtime.exceptions.ValidationError):
            runtime.invoke_endpoint(
                EndpointName="Metered", Body=ROW, ContentType="text/csv", TargetVariant="Nope"
            )
        with pytest.raises(runtime.exceptions.ValidationError):
            runtime.invoke_endpoint(EndpointName="nobody", Body=ROW, ContentType="text/csv")  # not metered

        values = _prometheus(server)
        assert values["sagemaker_Invocations_total"] == ok + 2
        assert values["sagemaker_InvocationModelErrors_total"] == 1
        assert values["sagemaker_Invocation4XXErrors_total"] == 1
        assert values["sagemaker_Invocation5XXErrors_total"] == 0
        assert values["sagemaker_ColdStarts_total"] >= 1
        assert values["sagemaker_ModelSetupTime_microseconds_count"] == values["sagemaker_ColdStarts_total"]
        assert values["sagemaker_ModelLatency_microseconds_sum"] > 0

        # More invocations, then SIGKILL more than a flush interval later: none may be lost.
        for i in range(10):
            invoke(i)
        time.sleep(1.2)
        server.kill()
    finally:
        server.stop()

    report = _cli("metrics", "Metered", "--data-dir", str(data), "--since", "1h", "--period", "60m")
    points = report["Datapoints"]
    assert sum(p["Invocations"] for p in points) == ok + 2 + 10
    assert sum(p["InvocationModelErrors"] for p in points) == 1
    assert sum(p["Invocation4XXErrors"] for p in points) == 1
    assert {p["VariantName"] for p in points} == {"AllTraffic", ""}

    # The restarted server adds to the same history.
    server = ColdbrewServer(data).start()
    try:
        runtime = server.client("sagemaker-runtime")
        deadline = time.monotonic() + 30
        while True:
            try:
                runtime.invoke_endpoint(EndpointName="Metered", Body=ROW, ContentType="text/csv")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        server.stop()  # SIGTERM: flushes on shutdown
    cost = _cli("cost", "Metered", "--data-dir", str(data))
    (endpoint,) = cost["Endpoints"]
    assert endpoint["Invocations"] >= ok + 2 + 10 + 1
    assert endpoint["GBSeconds"] > 0 and endpoint["Cost"] > 0
    assert endpoint["InstanceAlternative"]["InstanceType"] == "ml.t2.medium"
    assert endpoint["BreakEvenInvocationsPerHour"] > 0
