"""A node removed from a real three-node Ray cluster mid-traffic, and one that joins (a module of
its own: it changes the cluster)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.ray.conftest import HEAD_MEMORY_MB, NODE_MEMORY_MB, RayCluster, budget
from tests.ray.test_ray_backend import delete, deploy, gone, invoke, wait_until
from tests.support import ColdbrewServer, deploy_serverless, wait_for_status

pytestmark = pytest.mark.ray


def test_a_node_removed_mid_traffic_costs_only_its_requests_and_a_new_node_is_used(
    ray_server: ColdbrewServer, ray_sm: Any, ray_runtime: Any, ray_cluster: RayCluster, node_archive: Path
) -> None:
    assert budget(ray_server).total == HEAD_MEMORY_MB + 2 * NODE_MEMORY_MB
    deploy(ray_sm, "faults", node_archive, memory=1024, max_concurrency=2, provisioned=2)
    answers: list[dict[str, Any]] = []
    failures: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                answers.append(invoke(ray_runtime, "faults", sleep=0.2))
            except ray_runtime.exceptions.ModelError as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=traffic) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len({a["node"] for a in answers}) == 2, "both worker nodes serve")
        victim = next(n for n in ray_cluster.workers if str(n.node_id) == answers[-1]["node"])
        survivor = next(str(n.node_id) for n in ray_cluster.workers if n is not victim)
        ray_cluster.remove_node(victim)
        # All the node's processes are gone (on a machine that dies they go with it; a simulated
        # node's outlive its raylet by a moment).
        wait_until(
            lambda: gone({a["pid"] for a in answers if a["node"] == str(victim.node_id)}),
            "the node's workers are gone",
        )
        removed_at = len(answers)
        wait_until(lambda: len(answers) >= removed_at + 10, "traffic is served after the removal")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    # At most the two requests in flight were on the removed node; each says what happened.
    assert len(failures) <= 2, failures
    assert all("exited while handling this request" in f for f in failures), failures
    assert {a["node"] for a in answers[removed_at:]} == {survivor}

    # Serving's memory budget lost the removed node's memory (600 + 2560 MB are left), and the
    # survivor holds "faults"' two 1024 MB environments: 2048 MB more does not fit in it.
    def shrunk() -> bool:
        now = budget(ray_server)
        return now.total == HEAD_MEMORY_MB + NODE_MEMORY_MB and now.used == 2048

    wait_until(shrunk, "the budget shrinks with the node")
    assert budget(ray_server).free < 2048
    # So the deploy's load check waits for room (the core never over-commits the budget).
    deploy_serverless(ray_sm, "joined", f"file://{node_archive}", memory=2048, max_concurrency=1)
    assert ray_sm.describe_endpoint(EndpointName="joined")["EndpointStatus"] == "Creating"
    # A node joins: the budget grows by its memory, the load check finds room, and the new
    # environment is placed on the new node (the only one with 2048 MB free).
    joined = str(ray_cluster.add_node().node_id)
    ray_cluster.cluster.wait_for_nodes()
    grown = HEAD_MEMORY_MB + 2 * NODE_MEMORY_MB
    wait_until(lambda: budget(ray_server).total == grown, "the budget grows with the node")
    wait_for_status(ray_sm, "joined", "InService", timeout=120)
    assert invoke(ray_runtime, "joined")["node"] == joined
    delete(ray_sm, "joined")
    delete(ray_sm, "faults")
