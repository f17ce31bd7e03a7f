"""Ray backend benchmark (issue 16): warm overhead over the local backend, and cold starts on a
worker node of a Ray cluster, in the same run and machine state.

Starts a real ``coldbrew serve`` with the local backend, then one with ``--backend ray`` against a
``ray.cluster_utils.Cluster`` on this machine (a head with too little memory for an environment,
so every environment lands on the worker node). Both serve the same random forest (50 trees, the
diabetes data) through the same handler, and print one JSON document.

A cluster_utils node is a set of Ray processes on this machine: the worker's address is loopback
TCP (the local backend's is a Unix socket), so the figures show what the Ray backend adds (TCP,
the agent, placement, model shipping) but not a real network's round trip.

    python bench/ray_backend.py [--warm-requests 1000] [--cold-trials 15]

``--placement-groups N`` measures instead what reserving an environment's memory as a Ray
placement group would add to a cold start: N times, from a driver (as the gateway is), create a
group of one bundle ``{"memory": ...}`` pinned to the worker node (bundle label selector
``ray.io/node-id``) and wait until it is placed: in free room, and in the room of a group just
removed (what replacing an environment would wait for); and the removal call. It prints the
median and p90 of each.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.ray.conftest import HEAD_MEMORY_MB, INFERENCE_PY, MB, NODE_MEMORY_MB, budget  # noqa: E402
from tests.support import ColdbrewServer, deploy_serverless, tar_gz, wait_for_status  # noqa: E402


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(float(np.percentile(np.array(ms), 99)), 3),
        "p90_ms": round(float(np.percentile(np.array(ms), 90)), 3),
        "n": len(ms),
    }


def archive(path: Path) -> Path:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    features, target = load_diabetes(return_X_y=True)
    model = RandomForestRegressor(n_estimators=50, random_state=0).fit(features, target)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    path.write_bytes(tar_gz({"model.joblib": buffer.getvalue(), "code/inference.py": INFERENCE_PY.encode()}))
    return path


def body() -> str:
    from sklearn.datasets import load_diabetes

    row = load_diabetes(return_X_y=True)[0][0]
    return json.dumps({"rows": [row.tolist()]})


def measure(server: ColdbrewServer, model: Path, warm_requests: int, cold_trials: int) -> dict[str, Any]:
    sm = server.client()
    payload = body()
    headers = {"Content-Type": "application/json"}
    deploy_serverless(sm, "warm", model.as_uri(), max_concurrency=2)
    wait_for_status(sm, "warm", "InService", timeout=180)
    deploy_serverless(
        sm, "cold", model.as_uri(), max_concurrency=1, environment={"COLDBREW_IDLE_TIMEOUT_S": "0.3"}
    )
    wait_for_status(sm, "cold", "InService", timeout=180)
    results: dict[str, Any] = {}
    with httpx.Client(timeout=120) as client:
        url = f"{server.url}/endpoints/warm/invocations"
        for _ in range(50):
            client.post(url, content=payload, headers=headers).raise_for_status()
        warm = []
        for _ in range(warm_requests):
            started = time.perf_counter()
            client.post(url, content=payload, headers=headers).raise_for_status()
            warm.append(time.perf_counter() - started)
        results["warm_invoke"] = summary_ms(warm)
        results["warm_node"] = client.post(url, content=payload, headers=headers).json()["node"]
        url = f"{server.url}/endpoints/cold/invocations"
        previous = client.post(url, content=payload, headers=headers).json()["pid"]
        cold: list[float] = []
        nodes: set[str | None] = set()
        while len(cold) < cold_trials:
            # Released after 0.3 s idle: wait until its worker is gone (the nodes run here).
            deadline = time.monotonic() + 30
            while psutil.pid_exists(previous) and time.monotonic() < deadline:
                time.sleep(0.02)
            started = time.perf_counter()
            answer = client.post(url, content=payload, headers=headers).json()
            elapsed = time.perf_counter() - started
            if answer["pid"] != previous:  # a cold start indeed
                cold.append(elapsed)
                nodes.add(answer["node"])
            previous = answer["pid"]
        results["cold_start"] = summary_ms(cold)
        results["cold_nodes"] = sorted(str(n) for n in nodes)
    # Serving's memory budget (on Ray: the cluster's nodes' memory) and the zygotes' share of it.
    results["memory_budget_mb"], results["zygotes_mb"], _ = budget(server)
    return results


def placement_groups(trials: int) -> dict[str, Any]:
    """Create, wait for and remove a one-bundle placement group pinned to a worker node, ``trials``
    times: what a cold start would pay to reserve its MemorySizeInMB as a Ray resource."""
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.placement_group import placement_group, remove_placement_group

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "memory": HEAD_MEMORY_MB * MB, "object_store_memory": 100 * MB},
    )
    try:
        worker = cluster.add_node(num_cpus=2, memory=NODE_MEMORY_MB * MB, object_store_memory=100 * MB)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        node_id = str(worker.node_id)

        def reserve(memory_mb: int) -> Any:
            group = placement_group(
                [{"memory": memory_mb * MB}],
                strategy="STRICT_PACK",
                bundle_label_selector=[{"ray.io/node-id": node_id}],
            )
            ray.get(group.ready(), timeout=30)
            assert ray.util.placement_group_table(group)["bundles_to_node_id"] == {0: node_id}
            return group

        created: list[float] = []
        removed: list[float] = []
        refilled: list[float] = []
        # The node's memory taken whole each time: the next group fits only once the last one's
        # memory is back on the node (what a start that replaces an environment would wait for).
        whole = NODE_MEMORY_MB - 64
        group = reserve(whole)
        for trial in range(trials + 3):  # the first three warm Ray's paths up, not counted
            started = time.perf_counter()
            remove_placement_group(group)
            returned = time.perf_counter()
            group = reserve(whole)
            again = time.perf_counter()
            small = reserve(64)
            placed = time.perf_counter()
            remove_placement_group(small)
            if trial >= 3:
                removed.append(returned - started)
                refilled.append(again - returned)
                created.append(placed - again)
        remove_placement_group(group)
        return {
            "trials": trials,
            "create_and_ready_in_free_room": summary_ms(created),
            "remove_call": summary_ms(removed),
            "create_and_ready_of_the_removed_groups_room": summary_ms(refilled),
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warm-requests", type=int, default=1000)
    parser.add_argument("--cold-trials", type=int, default=15)
    parser.add_argument("--placement-groups", type=int, default=0, metavar="N")
    args = parser.parse_args()
    if args.placement_groups:
        print(json.dumps(placement_groups(args.placement_groups), indent=2))
        return
    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-bench-ray-"))
    model = archive(tmp / "model.tar.gz")
    results: dict[str, Any] = {
        "model": "RandomForestRegressor(n_estimators=50) on load_diabetes, one JSON row"
    }

    server = ColdbrewServer(tmp / "local-data").start()
    try:
        results["local"] = measure(server, model, args.warm_requests, args.cold_trials)
    finally:
        server.stop()

    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "memory": HEAD_MEMORY_MB * MB,
            "object_store_memory": 100 * MB,
            "include_dashboard": False,
        },
    )
    try:
        worker = cluster.add_node(num_cpus=2, memory=NODE_MEMORY_MB * MB, object_store_memory=100 * MB)
        cluster.wait_for_nodes()
        server = ColdbrewServer(
            tmp / "ray-data", env={"COLDBREW_BACKEND": "ray", "COLDBREW_RAY_ADDRESS": str(cluster.address)}
        ).start(timeout=120)
        try:
            results["ray"] = measure(server, model, args.warm_requests, args.cold_trials)
        finally:
            server.stop()
        results["ray"]["worker_node"] = str(worker.node_id)
        results["ray"]["head_node"] = str(getattr(cluster.head_node, "node_id", None))
    finally:
        cluster.shutdown()
    results["ray_warm_overhead_p50_ms"] = round(
        results["ray"]["warm_invoke"]["p50_ms"] - results["local"]["warm_invoke"]["p50_ms"], 3
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
