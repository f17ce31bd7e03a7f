"""Provisioned instances inside the memory budget (issue 14, point 4): each instance holds its
instance type's memory in the machine's budget, and a deployment the machine cannot hold is
refused with a reason that says what to change, rather than over-committing it.

Live: a real server on loopback with a 10,000 MB budget, real boto3, real workers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ColdbrewServer, wait_for_status, worker_pids

BUDGET_MB = 10_000
ROW = ",".join(["0.01"] * 10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdbrewServer]:
    srv = ColdbrewServer(
        tmp_path_factory.mktemp("instances") / "data", env={"COLDBREW_MEMORY_BUDGET_MB": str(BUDGET_MB)}
    ).start()
    yield srv
    srv.stop()


def budget_used_mb(server: ColdbrewServer) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "coldbrew_memory_budget_used_megabytes":
                return float(sample.value)
    raise AssertionError("no coldbrew_memory_budget_used_megabytes in /metrics")


def wait_until(check: Any, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def create_instances(sm: Any, name: str, archive: Path, instance_type: str, count: int) -> None:
    sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": archive.as_uri()})
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": instance_type,
                "InitialInstanceCount": count,
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


def delete(sm: Any, name: str) -> None:
    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 600})


def test_instances_that_do_not_fit_fail_the_endpoint_with_a_reason(
    server: ColdbrewServer, model_archive: tuple[Path, Any]
) -> None:
    sm = server.client()
    before = worker_pids(server)
    # Two ml.m5.large instances hold 2 x 8192 MB: more than the 10,000 MB budget.
    create_instances(sm, "too-big", model_archive[0], "ml.m5.large", 2)
    failed = wait_for_status(sm, "too-big", "Failed")
    # The zygotes' memory comes out of the budget (once they have started and been measured).
    match = re.fullmatch(
        r"Variant AllTraffic: its 2 instances of 8192 MB each \(the memory of its instance type\) need "
        r"16384 MB, but this machine's memory budget of 10000 MB \(COLDBREW_MEMORY_BUDGET_MB\) has room "
        r"for (\d+) MB(?:; zygotes hold (\d+) MB)?\. To deploy it, lower the instance count, choose a "
        r"smaller instance type, delete other endpoints, or raise COLDBREW_MEMORY_BUDGET_MB\.",
        failed["FailureReason"],
    )
    assert match is not None, failed["FailureReason"]
    assert int(match[1]) + int(match[2] or 0) == BUDGET_MB
    assert worker_pids(server) == before  # nothing was started for it
    assert budget_used_mb(server) == 0
    delete(sm, "too-big")


def test_instances_count_in_the_budget_and_more_than_fit_are_refused(
    server: ColdbrewServer, model_archive: tuple[Path, Any]
) -> None:
    sm = server.client()
    runtime = server.client("sagemaker-runtime")
    before = worker_pids(server)
    create_instances(sm, "fits", model_archive[0], "ml.t2.medium", 2)  # 2 x 4096 MB
    wait_for_status(sm, "fits", "InService")
    assert budget_used_mb(server) == 2 * 4096
    assert len(worker_pids(server) - before) == 2
    # A third instance does not fit: the update is refused and the endpoint keeps its two.
    sm.update_endpoint_weights_and_capacities(
        EndpointName="fits",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}],
    )
    described = wait_for_status(sm, "fits", "InService")
    assert described["FailureReason"].startswith(
        "Update of weights and capacities failed: Variant AllTraffic: its 3 instances of 4096 MB each "
        "(the memory of its instance type) need 4096 MB more, but this machine's memory budget of 10000 MB"
    )
    [variant] = described["ProductionVariants"]
    assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (2, 2)
    assert budget_used_mb(server) == 2 * 4096
    assert len(worker_pids(server) - before) == 2
    reply = runtime.invoke_endpoint(EndpointName="fits", Body=ROW, ContentType="text/csv")
    assert json.loads(reply["Body"].read())
    # One instance fewer makes room; deleting the endpoint gives all of it back.
    sm.update_endpoint_weights_and_capacities(
        EndpointName="fits",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 1}],
    )
    described = wait_for_status(sm, "fits", "InService")
    assert "FailureReason" not in described
    assert wait_until(lambda: budget_used_mb(server) == 4096), budget_used_mb(server)
    delete(sm, "fits")
    assert wait_until(lambda: not worker_pids(server) - before), worker_pids(server) - before
    assert wait_until(lambda: budget_used_mb(server) == 0), budget_used_mb(server)
