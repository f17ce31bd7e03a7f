"""The scaling core's rule for cores, live: a real server, real workers measuring what their
invocations use (``x-coldbrew-cores``), and concurrent boto3 clients. CPU-bound invocations of a
serverless endpoint run no more at once than keep ``COLDBREW_CPU_SLOTS`` cores busy, so they are
served by that many environments; invocations that wait on I/O are not held back."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ColdbrewServer, deploy_serverless, wait_for_status

ROWS = [[0.0] * 10]


@pytest.fixture
def server(tmp_path: Path) -> Any:
    server = ColdbrewServer(tmp_path / "data", env={"COLDBREW_CPU_SLOTS": "2"}).start()
    yield server
    server.stop()


def scaling_gauges(server: ColdbrewServer, endpoint: str) -> dict[str, float]:
    """The endpoint's coldbrew_scaling_* gauges in /metrics, by name."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name.startswith("coldbrew_scaling_") and sample.labels.get("EndpointName") == endpoint:
                out[sample.name] = sample.value
    return out


def served_by(server: ColdbrewServer, name: str, archive: Path, payload: dict[str, Any]) -> set[int]:
    """The worker processes that served 24 invocations, eight at a time, after five one by one."""
    sm, runtime = server.client(), server.client("sagemaker-runtime", read_timeout=60)
    deploy_serverless(sm, name, archive.as_uri(), max_concurrency=8)
    wait_for_status(sm, name, "InService")

    def call(_: int) -> int:
        response = runtime.invoke_endpoint(
            EndpointName=name, Body=json.dumps(payload), ContentType="application/json"
        )
        return int(json.loads(response["Body"].read())["pid"])

    for n in range(5):  # measured first: a variant not yet measured is not held back
        call(n)
    with ThreadPoolExecutor(8) as pool:
        return set(pool.map(call, range(24)))


def test_cpu_bound_invocations_are_served_by_as_many_environments_as_cores(
    server: ColdbrewServer, scripted_archive: Path
) -> None:
    pids = served_by(server, "spin", scripted_archive, {"rows": ROWS, "spin": 0.02})
    # Eight at once with MaxConcurrency 8, but two cores' worth: two environments serve them all
    # (without the rule: eight).
    assert 1 <= len(pids) <= 2
    figures = scaling_gauges(server, "spin")
    assert 0.7 <= figures["coldbrew_scaling_invocation_cores"] <= 1.3
    assert figures["coldbrew_scaling_cpu_limit"] == 2
    assert figures["coldbrew_scaling_waiting"] == 0


def test_invocations_that_wait_on_io_are_not_held_back(
    server: ColdbrewServer, scripted_archive: Path
) -> None:
    pids = served_by(server, "sleepy", scripted_archive, {"rows": ROWS, "sleep": 0.3})
    # They use next to no CPU: each of the eight at once gets an environment of its own (a few
    # may be served by one that freed up before their own start was ready).
    assert len(pids) > 2
    figures = scaling_gauges(server, "sleepy")
    assert figures["coldbrew_scaling_invocation_cores"] < 0.2
    assert figures["coldbrew_scaling_cpu_limit"] >= 10
