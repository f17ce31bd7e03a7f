"""Hedged cold starts and a provisioned (instance) variant on a real Ray cluster: a head and one
worker node large enough for an ml.t2.medium instance (4,096 MB, 2 vCPU by Ray's accounting 2.32
vCPU at 1,769 MB per vCPU). A module of its own: its cluster differs from the shared one."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.ray.conftest import RayCluster
from tests.ray.test_ray_backend import delete, gone, invoke, wait_until
from tests.support import deploy_serverless, wait_for_status

pytestmark = pytest.mark.ray

LARGE_NODE_MB = 4608


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    cluster = RayCluster()
    try:
        cluster.add_node(memory_mb=LARGE_NODE_MB, cpus=3)
        cluster.cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def test_a_hedged_cold_start_is_served_by_the_environment_that_frees_up_first(
    ray_sm: Any, ray_runtime: Any, ray_cluster: RayCluster, node_archive: Path
) -> None:
    # Loading takes 3 s: the busy environment (1 s) frees up before the new one is ready.
    deploy_serverless(
        ray_sm, "hedge", f"file://{node_archive}", max_concurrency=2, environment={"LOAD_SLEEP_S": "3"}
    )
    wait_for_status(ray_sm, "hedge", "InService", timeout=120)
    first = invoke(ray_runtime, "hedge")
    with ThreadPoolExecutor(2) as pool:
        busy = pool.submit(invoke, ray_runtime, "hedge", sleep=1.0)
        wait_until(lambda: busy.running(), "the busy invocation is sent")
        hedged = invoke(ray_runtime, "hedge")
        assert busy.result()["pid"] == first["pid"]
    assert hedged["pid"] == first["pid"]
    # The environment started for it still joins the pool: two at once are served by two.
    with ThreadPoolExecutor(2) as pool:
        pids: set[int] = set()

        def two_served() -> bool:
            answers = list(pool.map(lambda _: invoke(ray_runtime, "hedge", sleep=0.5), range(2)))
            pids.update(a["pid"] for a in answers)
            return len(pids) == 2

        wait_until(two_served, "the hedged start's environment serves")
    assert {invoke(ray_runtime, "hedge")["node"]} == {str(ray_cluster.workers[0].node_id)}
    delete(ray_sm, "hedge")
    wait_until(lambda: gone(pids), "the deleted endpoint's environments are stopped")


def test_a_provisioned_variant_runs_its_instance_on_a_node_with_room(
    ray_sm: Any, ray_runtime: Any, ray_cluster: RayCluster, node_archive: Path
) -> None:
    ray_sm.create_model(
        ModelName="instance",
        PrimaryContainer={"Image": "coldbrew/sklearn", "ModelDataUrl": f"file://{node_archive}"},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew",
    )
    ray_sm.create_endpoint_config(
        EndpointConfigName="instance-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "instance",
                "InstanceType": "ml.t2.medium",
                "InitialInstanceCount": 1,
            }
        ],
    )
    ray_sm.create_endpoint(EndpointName="instance", EndpointConfigName="instance-config")
    wait_for_status(ray_sm, "instance", "InService", timeout=120)
    # One always-on instance takes concurrent requests (it never throttles at one).
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: invoke(ray_runtime, "instance", sleep=0.3), range(3)))
    assert len({a["pid"] for a in answers}) == 1
    assert {a["node"] for a in answers} == {str(ray_cluster.workers[0].node_id)}
    delete(ray_sm, "instance")
    wait_until(lambda: gone({answers[0]["pid"]}), "the deleted endpoint's instance is stopped")
