"""A node removed from a real three-node Ray cluster mid-traffic, and one that joins (a module of
its own: it changes the cluster)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.ray.conftest import RayCluster
from tests.ray.test_ray_backend import delete, deploy, gone, invoke, wait_until

pytestmark = pytest.mark.ray


def test_a_node_removed_mid_traffic_costs_only_its_requests_and_a_new_node_is_used(
    ray_sm: Any, ray_runtime: Any, ray_cluster: RayCluster, node_archive: Path
) -> None:
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
    # A node that joins takes new environments (here it is the only one with 1024 MB free: the
    # survivor holds both of "faults"' provisioned environments).
    joined = str(ray_cluster.add_node().node_id)
    ray_cluster.cluster.wait_for_nodes()
    deploy(ray_sm, "joined", node_archive, memory=1024, max_concurrency=1)
    assert invoke(ray_runtime, "joined")["node"] == joined
    delete(ray_sm, "joined")
    delete(ray_sm, "faults")
