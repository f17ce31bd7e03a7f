"""coldbrew serve --backend ray on a real three-node Ray cluster: placement, scale to zero, memory
limits per node, an update."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.ray.conftest import HEAD_MEMORY_MB, INFERENCE_PY, MB, NODE_MEMORY_MB, RayCluster, budget
from tests.support import ColdbrewServer, deploy_serverless, tar_gz, wait_for_status

pytestmark = pytest.mark.ray

ROWS = [[0.01] * 10]


def invoke(runtime: Any, name: str, **extra: Any) -> dict[str, Any]:
    response = runtime.invoke_endpoint(
        EndpointName=name, ContentType="application/json", Body=json.dumps({"rows": ROWS, **extra})
    )
    answer: dict[str, Any] = json.loads(response["Body"].read())
    return answer


def deploy(sm: Any, name: str, archive: Path, **kwargs: Any) -> None:
    deploy_serverless(sm, name, f"file://{archive}", **kwargs)
    wait_for_status(sm, name, "InService", timeout=120)


def test_environments_spread_across_worker_nodes(
    ray_server: ColdbrewServer, ray_sm: Any, ray_runtime: Any, ray_cluster: RayCluster, node_archive: Path
) -> None:
    deploy(ray_sm, "spread", node_archive, memory=1024, max_concurrency=2, provisioned=2)
    seen: set[str] = set()
    with ThreadPoolExecutor(2) as pool:
        for _ in range(5):
            answers = list(pool.map(lambda _: invoke(ray_runtime, "spread", sleep=0.3), range(2)))
            seen |= {a["node"] for a in answers}
    worker_ids = {str(n.node_id) for n in ray_cluster.workers}
    # Two environments of one endpoint: one on each worker node, none on the head (600 MB).
    assert seen == worker_ids
    assert answers[0]["predictions"] and answers[0]["node"] != ray_cluster.head_id
    # A model's error is metered with its node too.
    with pytest.raises(ray_runtime.exceptions.ModelError):
        invoke(ray_runtime, "spread", fail=True)
    # Metering records the node of every invocation (written within the meter's flush interval).
    metered: set[str] = set()
    failed: list[str | None] = []

    def nodes_metered() -> bool:
        with sqlite3.connect(ray_server.data_dir / "coldbrew.db") as db:
            rows = db.execute("SELECT DISTINCT node FROM meter_records WHERE endpoint = 'spread'").fetchall()
            errors = db.execute(
                "SELECT node FROM meter_records WHERE endpoint = 'spread' AND error_code = 'ModelError'"
            ).fetchall()
        metered.clear()
        metered.update(row[0] for row in rows)
        failed[:] = [row[0] for row in errors]
        return metered == worker_ids and len(failed) == 1

    wait_until(nodes_metered, "the meter records both worker nodes and the failed invocation")
    assert failed[0] in worker_ids
    delete(ray_sm, "spread")


def delete(sm: Any, name: str) -> None:
    sm.delete_endpoint(EndpointName=name)


def created_reservations() -> dict[str, dict[str, Any]]:
    """The cluster's placement groups that Ray has placed, by id (from a driver of the test's)."""
    import ray

    table = ray.util.placement_group_table()
    return {pg: group for pg, group in table.items() if group["state"] == "CREATED"}


def wait_until(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def gone(pids: set[int]) -> bool:
    """Whether these workers have exited (every node of the test cluster runs on this machine)."""
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)


def test_scale_to_zero_and_back_on_a_worker_node(
    ray_server: ColdbrewServer, ray_sm: Any, ray_runtime: Any, ray_cluster: RayCluster, node_archive: Path
) -> None:
    deploy(ray_sm, "zero", node_archive, memory=1024, max_concurrency=1)
    first = invoke(ray_runtime, "zero")
    assert first["node"] in {str(n.node_id) for n in ray_cluster.workers}
    # Idle past COLDBREW_IDLE_TIMEOUT_S (2 s): no environment left on the node.
    wait_until(lambda: gone({first["pid"]}), "the idle environment is released")
    before = ray_server.log().count("cold start of zero/AllTraffic: ")
    started = time.monotonic()
    again = invoke(ray_runtime, "zero")
    elapsed_ms = (time.monotonic() - started) * 1000
    assert again["pid"] != first["pid"]
    assert again["node"] in {str(n.node_id) for n in ray_cluster.workers}
    assert again["predictions"] == first["predictions"]
    # The cold start's breakdown is logged as for a local worker, from the trace the node's
    # agent sent back: every stage, on the gateway's clock, adding up to the total.
    from coldbrew.backends.start_trace import STAGES

    wait_until(
        lambda: ray_server.log().count("cold start of zero/AllTraffic: ") > before, "the breakdown is logged"
    )
    line = [x for x in ray_server.log().splitlines() if "cold start of zero/AllTraffic: " in x][-1]
    ms = {
        stage: float(value)
        for stage, _, value in (pair.partition("=") for pair in line.split(": ", 2)[-1].split())
    }
    assert set(ms) == {*STAGES, "total", "limit"}, line
    assert all(ms[stage] >= 0 for stage in STAGES), line
    assert sum(ms[stage] for stage in STAGES) == pytest.approx(ms["total"], abs=0.01)
    assert ms["model_load"] > 0 and ms["total"] <= elapsed_ms, line
    delete(ray_sm, "zero")
    wait_until(lambda: gone({again["pid"]}), "the deleted endpoint's environment is stopped")


def test_a_workers_output_reaches_its_environments_log_stream(
    ray_server: ColdbrewServer, ray_sm: Any, ray_runtime: Any, ray_cluster: RayCluster, node_archive: Path
) -> None:
    """What a worker on a node writes reaches the environment's CloudWatch Logs stream on the
    head, as a local worker's does (through the agent's polls)."""
    deploy(ray_sm, "logged", node_archive, memory=1024, max_concurrency=1)
    node = invoke(ray_runtime, "logged")["node"]
    logs = ray_server.client("logs")
    group = "/aws/sagemaker/Endpoints/logged"

    def messages() -> list[str]:
        pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group)
        return [e["message"] for page in pages for e in page["events"]]

    wait_until(lambda: f"model loading on node {node}" in messages(), "the worker's output is in its stream")
    assert any(m.startswith("coldbrew: environment started in ") for m in messages())
    delete(ray_sm, "logged")


SOURCE_INFERENCE_PY = """
import json
import os

import coldbrew_test_scaler
import joblib
import numpy as np

def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))

def input_fn(body, content_type, context):
    return json.loads(body)

def predict_fn(data, model, context):
    return {
        "predictions": model.predict(np.array(data["rows"])).tolist(),
        "factor": coldbrew_test_scaler.FACTOR,
        "code": os.path.dirname(os.path.abspath(__file__)),
        "package": os.path.abspath(coldbrew_test_scaler.__file__),
        "node": os.environ.get("COLDBREW_NODE_ID"),
    }

def output_fn(prediction, accept, context):
    return json.dumps(prediction), "application/json"
"""


def test_a_source_directory_and_its_requirements_reach_the_node(
    ray_server: ColdbrewServer,
    ray_sm: Any,
    ray_runtime: Any,
    ray_cluster: RayCluster,
    tmp_path: Path,
    node_archive: Path,
) -> None:
    """SAGEMAKER_SUBMIT_DIRECTORY (downloaded on the head at deploy) and the packages its
    requirements.txt installs are shipped to the node with the model, and the worker there is
    pointed at the node's copies."""
    with tarfile.open(node_archive) as tar:
        member = tar.extractfile("model.joblib")
        assert member is not None
        model = tmp_path / "model.tar.gz"
        model.write_bytes(tar_gz({"model.joblib": member.read()}))
    source = tmp_path / "sourcedir.tar.gz"
    source.write_bytes(
        tar_gz(
            {"inference.py": SOURCE_INFERENCE_PY.encode(), "requirements.txt": b"coldbrew-test-scaler==1.0\n"}
        )
    )
    deploy(
        ray_sm,
        "sourced",
        model,
        memory=1024,
        max_concurrency=1,
        environment={"SAGEMAKER_SUBMIT_DIRECTORY": source.as_uri()},
    )
    answer = invoke(ray_runtime, "sourced")
    assert answer["factor"] == 1000.0 and answer["predictions"]
    assert answer["node"] in {str(n.node_id) for n in ray_cluster.workers}
    # The node's copies of the source directory and of the installed package, not the head's
    # cache (the nodes of this test cluster share the head's file system: both would be found).
    assert not answer["code"].startswith(str(ray_server.data_dir)), answer["code"]
    assert not answer["package"].startswith(str(ray_server.data_dir)), answer["package"]
    delete(ray_sm, "sourced")


def test_no_node_holds_more_than_its_memory_and_the_budget_is_the_clusters(
    ray_server: ColdbrewServer, ray_sm: Any, ray_runtime: Any, node_archive: Path
) -> None:
    # Serving's memory budget is the cluster's: every node's Ray memory (no
    # COLDBREW_MEMORY_BUDGET_MB here), the zygotes' memory taken out of it.
    assert budget(ray_server).total == HEAD_MEMORY_MB + 2 * NODE_MEMORY_MB
    # Larger than any node (2560 MB): the deploy fails, saying what to change.
    deploy_serverless(ray_sm, "huge", f"file://{node_archive}", memory=3072, max_concurrency=1)
    failed = wait_for_status(ray_sm, "huge", "Failed", timeout=120)
    assert "more than any node of the Ray cluster offers (the largest has 2560 MB)" in failed["FailureReason"]
    delete(ray_sm, "huge")

    def attempt(name: str) -> dict[str, Any] | str:
        try:
            return invoke(ray_runtime, name, sleep=1.5)
        except ray_runtime.exceptions.ModelError as exc:
            return str(exc)

    def at_once(name: str, count: int) -> tuple[dict[str, set[int]], list[str]]:
        with ThreadPoolExecutor(count) as pool:
            outcomes = list(pool.map(attempt, [name] * count))
        by_node: dict[str, set[int]] = {}
        for answer in outcomes:
            if isinstance(answer, dict):
                by_node.setdefault(answer["node"], set()).add(answer["pid"])
        return by_node, [o for o in outcomes if isinstance(o, str)]

    # 1024 MB, five at once: the budget has room for five (5,720 MB less the zygotes', about
    # 430 MB), but each worker node for two and the head for none: the nodes' own memory bounds
    # them, not the budget. Four environments start, two on each worker node; the fifth start
    # waits for room on a node rather than failing, and its request is served by the first of
    # the four to be free (a hedged cold start). None is refused.
    deploy(ray_sm, "per-node", node_archive, memory=1024, max_concurrency=5)
    by_node, refusals = at_once("per-node", 5)
    after = budget(ray_server)  # the zygotes of every node reported by now
    assert after.total - after.zygotes >= 5 * 1024, after
    assert refusals == []
    assert sorted(len(pids) for pids in by_node.values()) == [2, 2], by_node
    assert "per-node: no node has 1024 MB free" in ray_server.log()
    pids = {p for node_pids in by_node.values() for p in node_pids}
    delete(ray_sm, "per-node")
    wait_until(lambda: gone(pids), "the deleted endpoint's environments are stopped")
    # The fifth start got its room when the four were released, started and was stopped with
    # its endpoint: nothing of "per-node" holds memory any more.
    wait_until(lambda: budget(ray_server).used == 0, "no environment holds memory", timeout=90)
    # 2048 MB: two fit on the nodes (one each), and only two in the budget: the third request
    # waits for one of its endpoint's environments, as on one machine, and none is refused.
    deploy(ray_sm, "large", node_archive, memory=2048, max_concurrency=3)
    by_node, refusals = at_once("large", 3)
    assert refusals == []
    assert len(by_node) == 2 and all(len(pids) == 1 for pids in by_node.values()), by_node
    delete(ray_sm, "large")
    wait_until(
        lambda: gone({p for node_pids in by_node.values() for p in node_pids}),
        "the deleted endpoint's environments are stopped",
    )


def test_a_start_that_fits_the_cluster_but_no_node_waits_for_room_on_one(
    ray_server: ColdbrewServer, ray_sm: Any, ray_runtime: Any, ray_cluster: RayCluster, node_archive: Path
) -> None:
    """2,048 MB asked while each worker node has about 1,300 MB free (one 1,024 MB environment of
    another endpoint on each): the cluster's budget has room, no single node has. The cold start
    waits, and its invocation is answered once one of the other endpoint's environments stops
    and leaves room on its node."""
    deploy(ray_sm, "whole", node_archive, memory=2048, max_concurrency=1)
    # Its load check's environment, released when idle (2 s): "whole" holds nothing now.
    wait_until(lambda: budget(ray_server).used == 0, "the load check's environment is released")
    deploy(ray_sm, "fragment", node_archive, memory=1024, max_concurrency=2, provisioned=2)
    wait_until(lambda: budget(ray_server).used == 2048, "the two provisioned environments hold memory")
    now = budget(ray_server)
    assert now.free >= 2048, now  # the budget has room: the core starts it, placement finds none
    before = ray_server.log().count("whole: no node has 2048 MB free")
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        answer = pool.submit(invoke, ray_runtime, "whole")
        wait_until(
            lambda: ray_server.log().count("whole: no node has 2048 MB free") > before,
            "the cold start waits for room on a node",
        )
        time.sleep(1.0)
        assert not answer.done()  # waiting, not failed
        # Room on the nodes: the other endpoint's environments stop.
        delete(ray_sm, "fragment")
        served = answer.result(timeout=60)
    assert time.monotonic() - started > 1.0
    assert served["predictions"] and served["node"] in {str(n.node_id) for n in ray_cluster.workers}
    assert "whole: room for 2048 MB on node" in ray_server.log()
    delete(ray_sm, "whole")
    wait_until(lambda: gone({served["pid"]}), "the deleted endpoint's environment is stopped")


def test_a_start_no_node_has_room_for_releases_an_idle_environment_on_one_node(
    ray_server: ColdbrewServer, ray_sm: Any, ray_runtime: Any, ray_cluster: RayCluster, node_archive: Path
) -> None:
    """2,048 MB asked while each worker node holds one idle 1,024 MB environment of another
    endpoint, kept for 600 s: the cluster's budget has room, no node has, and nothing would stop
    on its own for minutes. The scaling core releases the idle environment on one node (the
    memory budget per node, issue 16), and the cold start is served there; the other stays."""
    deploy(ray_sm, "whole-2", node_archive, memory=2048, max_concurrency=1)
    wait_until(lambda: budget(ray_server).used == 0, "the load check's environment is released")
    deploy(
        ray_sm,
        "kept-pair",
        node_archive,
        memory=1024,
        max_concurrency=2,
        environment={"COLDBREW_IDLE_TIMEOUT_S": "600"},
    )
    with ThreadPoolExecutor(2) as pool:
        pair = list(pool.map(lambda _: invoke(ray_runtime, "kept-pair", sleep=1.5), range(2)))
    # One on each worker node (an endpoint's environments spread), both idle now and kept.
    assert len({answer["node"] for answer in pair}) == 2, pair
    assert budget(ray_server).used == 2048
    assert budget(ray_server).free >= 2048
    served = invoke(ray_runtime, "whole-2")
    assert "whole-2: no node has 2048 MB free" in ray_server.log()
    [evicted] = [a for a in pair if a["node"] == served["node"]]
    [kept] = [a for a in pair if a["node"] != served["node"]]
    wait_until(lambda: gone({evicted["pid"]}), "the idle environment on the chosen node is released")
    assert "evicted to make room" in ray_server.log()
    assert not gone({kept["pid"]})  # the other node's room was not needed
    assert invoke(ray_runtime, "kept-pair")["pid"] == kept["pid"]
    delete(ray_sm, "whole-2")
    delete(ray_sm, "kept-pair")
    wait_until(lambda: gone({served["pid"], kept["pid"]}), "the deleted endpoints' environments are stopped")


def test_each_environment_reserves_its_memory_and_vcpus_on_its_node_as_a_ray_placement_group(
    ray_sm: Any, ray_runtime: Any, ray_cluster: RayCluster, node_archive: Path
) -> None:
    """MemorySizeInMB as a Ray resource: while an environment lives, a placement group of one
    bundle (its memory, and its vCPUs by the 1,769 MB rule) holds them on its node, so Ray
    schedules no other work there; it is removed when the environment stops."""
    import ray

    ray.init(address=ray_cluster.address, namespace="observer", log_to_driver=False)
    try:
        before = set(created_reservations())
        deploy(ray_sm, "reserved", node_archive, memory=1024, max_concurrency=1)
        answer = invoke(ray_runtime, "reserved")
        new = {pg: group for pg, group in created_reservations().items() if pg not in before}
        assert len(new) == 1, new
        (group,) = new.values()
        assert group["bundles"] == {0: {"memory": 1024 * MB, "CPU": pytest.approx(1024 / 1769, abs=1e-4)}}
        assert group["bundles_to_node_id"] == {0: answer["node"]}
        delete(ray_sm, "reserved")
        wait_until(
            lambda: not set(new) & set(created_reservations()), "the environment's reservation is removed"
        )
        wait_until(lambda: gone({answer["pid"]}), "the deleted endpoint's environment is stopped")
    finally:
        ray.shutdown()


def test_a_cold_start_soon_after_scale_to_zero_reuses_the_stopped_environments_reservation(
    ray_sm: Any, ray_runtime: Any, ray_cluster: RayCluster, node_archive: Path
) -> None:
    """A placement group made in the room of one just removed waits about a second for Ray; the
    reservation of an environment that stopped is kept a few seconds for the next start of its
    size on its node, and removed after."""
    import ray

    from coldbrew.backends.ray.backend import PARK_S

    ray.init(address=ray_cluster.address, namespace="observer", log_to_driver=False)
    try:
        before = set(created_reservations())
        deploy(ray_sm, "parked", node_archive, memory=1024, max_concurrency=1)
        first = invoke(ray_runtime, "parked")
        ours = {pg: group for pg, group in created_reservations().items() if pg not in before}
        assert len(ours) == 1, ours
        # Idle past the server's COLDBREW_IDLE_TIMEOUT_S (2 s): released; back at once.
        wait_until(lambda: gone({first["pid"]}), "the idle environment is released")
        again = invoke(ray_runtime, "parked")
        assert again["pid"] != first["pid"] and again["node"] == first["node"]
        now = {pg: group for pg, group in created_reservations().items() if pg not in before}
        assert set(now) == set(ours), "the new environment holds the stopped one's reservation"
        delete(ray_sm, "parked")
        wait_until(lambda: gone({again["pid"]}), "the deleted endpoint's environment is stopped")
        # Kept PARK_S for a start that does not come, then removed.
        wait_until(
            lambda: not set(ours) & set(created_reservations()),
            "the parked reservation is removed",
            PARK_S + 30,
        )
    finally:
        ray.shutdown()


def test_max_concurrency_throttles_on_the_cluster_as_on_one_machine(
    ray_sm: Any, ray_runtime: Any, node_archive: Path
) -> None:
    deploy(ray_sm, "throttle", node_archive, memory=1024, max_concurrency=1)
    warm = invoke(ray_runtime, "throttle")
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(invoke, ray_runtime, "throttle", sleep=3)
        # The slow one holds the only environment by then (it is warm: no cold start to wait for).
        time.sleep(0.5)
        with pytest.raises(ray_runtime.exceptions.ClientError) as throttled:
            invoke(ray_runtime, "throttle")
        assert slow.result()["pid"] == warm["pid"]
    assert throttled.value.response["Error"]["Code"] == "ThrottlingException"
    assert "MaxConcurrency" in throttled.value.response["Error"]["Message"]
    delete(ray_sm, "throttle")
    wait_until(lambda: gone({warm["pid"]}), "the deleted endpoint's environment is stopped")


def test_an_update_under_traffic_fails_no_invocation(
    ray_sm: Any, ray_runtime: Any, ray_cluster: RayCluster, node_archive: Path
) -> None:
    deploy(ray_sm, "update", node_archive, memory=1024, max_concurrency=2)
    ray_sm.create_model(
        ModelName="update-v2",
        PrimaryContainer={
            "Image": "coldbrew/sklearn",
            "ModelDataUrl": f"file://{node_archive}",
            "Environment": {"MODEL_VERSION": "2"},
        },
        ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew",
    )
    ray_sm.create_endpoint_config(
        EndpointConfigName="update-v2-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "update-v2",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2},
            }
        ],
    )
    answers: list[dict[str, Any]] = []
    failures: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                answers.append(invoke(ray_runtime, "update", sleep=0.05))
            except Exception as exc:  # every kind counts: none may happen
                failures.append(repr(exc))

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        wait_until(lambda: len(answers) >= 5, "traffic is served before the update")
        ray_sm.update_endpoint(EndpointName="update", EndpointConfigName="update-v2-config")
        wait_for_status(ray_sm, "update", "InService", timeout=120)
        wait_until(lambda: answers[-1]["version"] == "2", "the updated model answers")
        count = len(answers)
        wait_until(lambda: len(answers) >= count + 5, "traffic goes on after the update")
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert answers[0]["version"] == "1" and answers[-1]["version"] == "2"
    assert {a["node"] for a in answers} <= {str(n.node_id) for n in ray_cluster.workers}
    delete(ray_sm, "update")
    wait_until(lambda: gone({a["pid"] for a in answers}), "the deleted endpoint's environments are stopped")


def test_a_node_refuses_a_model_whose_shipment_differs_from_its_hash(
    tmp_path: Path, ray_cluster: RayCluster, node_archive: Path
) -> None:
    """A corrupted shipment: the bytes in Ray's object store are not those the head hashed. The
    node's agent refuses them, keeps no copy, and starts no worker on them; the start fails
    saying why. The same model shipped intact is then served."""
    import ray

    from coldbrew.backends.base import WorkerSpec, WorkerStartError
    from coldbrew.backends.ray.backend import RayBackend

    model_dir = tmp_path / ("c" * 64)  # as in the head's content-addressed cache
    model_dir.mkdir()
    with tarfile.open(node_archive) as tar:
        tar.extractall(model_dir, filter="data")
    spec = WorkerSpec(str(model_dir), memory_mb=512, runtime="sklearn", tenant="shipped")

    async def scenario() -> None:
        # A driver of its own in this process (the server's is another), without zygotes: a
        # worker here starts in a fresh interpreter.
        backend = RayBackend(ray_cluster.address, zygote=False, memory_cgroups=False, namespace="shipping")
        try:
            bundle, ref = await backend._bundle(str(model_dir))
            data = bytearray(await ref)
            data[len(data) // 2] ^= 0xFF  # one byte of the model's files changed on the way
            backend._bundles[str(model_dir)] = (bundle, ray.put(bytes(data)))
            with pytest.raises(WorkerStartError, match="arrived with SHA-256"):
                await backend.start(spec)
            for node in backend.nodes.values():
                assert bundle.digest not in node.models
                assert not await node.agent.has_model.remote(bundle.digest)
                assert (await node.agent.poll.remote()).alive == {}
            # Shipped again from the head's cache, intact: verified, kept and served.
            del backend._bundles[str(model_dir)]
            worker = await backend.start(spec)
            try:
                async with httpx.AsyncClient() as client:
                    assert (await client.get(f"{worker.address}/ping")).status_code == 200
                assert await worker.node.agent.has_model.remote(bundle.digest)
            finally:
                await worker.stop()
        finally:
            await backend.close()

    asyncio.run(scenario())


def test_an_s3_model_is_fetched_by_the_node_from_the_embedded_s3(
    ray_server: ColdbrewServer, ray_sm: Any, ray_runtime: Any, ray_cluster: RayCluster, node_archive: Path
) -> None:
    """ModelDataUrl s3://, in the server's embedded S3 (put with boto3): the server fetches it
    into its cache at deploy, and the node that serves it fetches it from the same S3 itself
    (COLDBREW_RAY_NODE_S3 is the server's URL here), verified by the cache's digest."""
    # Bytes of their own: the same archive as the other tests' would be in the nodes' caches
    # already (the cache is content-addressed), and no node would need to fetch it.
    with tarfile.open(node_archive) as tar:
        member = tar.extractfile("model.joblib")
        assert member is not None
        archive = tar_gz(
            {"model.joblib": member.read(), "code/inference.py": (INFERENCE_PY + "# s3\n").encode()}
        )
    s3 = ray_server.client("s3")
    s3.create_bucket(Bucket="deployed-models")
    s3.put_object(Bucket="deployed-models", Key="forest/model.tar.gz", Body=archive)
    deploy_serverless(ray_sm, "from-s3", "s3://deployed-models/forest/model.tar.gz", memory=1024)
    wait_for_status(ray_sm, "from-s3", "InService", timeout=120)
    answer = invoke(ray_runtime, "from-s3")
    assert answer["predictions"] and answer["node"] in {str(n.node_id) for n in ray_cluster.workers}
    fetched = [
        x for x in ray_server.log().splitlines() if "(s3://deployed-models/forest/model.tar.gz) fetched" in x
    ]
    assert fetched, "no node fetched the model from S3"
    assert "shipping it from the head's cache instead" not in ray_server.log()
    delete(ray_sm, "from-s3")


def test_a_node_fetches_an_s3_model_itself_and_serves_it_only_if_it_hashes_as_on_the_head(
    tmp_path: Path,
    ray_server: ColdbrewServer,
    ray_cluster: RayCluster,
    node_archive: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A model whose ModelDataUrl is s3:// (here in the real server's embedded S3, put there with
    boto3) is fetched by the node itself, with a GET the head signed, and kept only if what it
    fetched hashes to the digest the head's cache recorded for it; nothing goes through the head.
    An object changed in S3 since the head fetched it hashes differently: the node keeps nothing
    of it, and the head's own copy is shipped and served instead."""
    import hashlib
    import io
    import logging

    import joblib
    import numpy as np
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    from coldbrew.backends.base import WorkerSpec
    from coldbrew.backends.ray.backend import RayBackend

    s3 = ray_server.client("s3")
    s3.create_bucket(Bucket="ray-models")

    def cached(archive: bytes, key: str) -> WorkerSpec:
        """A model directory as the head's cache holds it (named by the archive's SHA-256)."""
        model_dir = tmp_path / hashlib.sha256(archive).hexdigest()
        model_dir.mkdir()
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(model_dir, filter="data")
        label = f"s3://ray-models/{key}"
        return WorkerSpec(
            str(model_dir), memory_mb=512, runtime="sklearn", tenant=key, labels={str(model_dir): label}
        )

    original = node_archive.read_bytes()
    s3.put_object(Bucket="ray-models", Key="forest/model.tar.gz", Body=original)
    fetched = cached(original, "forest/model.tar.gz")
    # The head's copy of another archive of the same model (its code differs by a comment), and
    # under its key in S3 by now a different model, trained here.
    with tarfile.open(node_archive) as tar:
        member = tar.extractfile("model.joblib")
        assert member is not None
        forest = member.read()
    heads = tar_gz({"model.joblib": forest, "code/inference.py": (INFERENCE_PY + "# v2\n").encode()})
    changed = cached(heads, "changed/model.tar.gz")
    features, target = load_diabetes(return_X_y=True)
    other = RandomForestRegressor(n_estimators=5, max_depth=2, random_state=1).fit(features, target)
    buffer = io.BytesIO()
    joblib.dump(other, buffer)
    replaced = tar_gz({"model.joblib": buffer.getvalue(), "code/inference.py": INFERENCE_PY.encode()})
    s3.put_object(Bucket="ray-models", Key="changed/model.tar.gz", Body=replaced)
    others = other.predict(np.array(ROWS)).tolist()

    async def predictions(address: str) -> Any:
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{address}/invocations", json={"rows": ROWS}, timeout=30)
            answer.raise_for_status()
            return answer.json()["predictions"]

    async def scenario() -> None:
        backend = RayBackend(
            ray_cluster.address,
            zygote=False,
            memory_cgroups=False,
            namespace="fetching",
            node_s3=ray_server.url,
        )
        # Signed as this test's client: the gateway's own key lives in the server's process.
        backend._s3_client = s3
        try:
            worker = await backend.start(fetched)
            try:
                served = await predictions(worker.address)
                assert await worker.node.agent.has_model.remote(Path(fetched.model_dir).name)
                assert backend._bundles == {}  # nothing shipped from the head
            finally:
                await worker.stop()
            assert served != others
            worker = await backend.start(changed)
            try:
                # The head's model (the same forest as the first), not the one now in S3.
                assert await predictions(worker.address) == served
                agent = worker.node.agent
                assert await agent.has_model.remote(Path(changed.model_dir).name)
                assert not await agent.has_model.remote(hashlib.sha256(replaced).hexdigest())
                assert changed.model_dir in backend._bundles  # shipped from the head's cache
            finally:
                await worker.stop()
        finally:
            await backend.close()

    with caplog.at_level(logging.INFO, logger="coldbrew.backends.ray"):
        asyncio.run(scenario())
    assert "fetched from S3 by node" in caplog.text
    assert "s3://ray-models/changed/model.tar.gz hashed to" in caplog.text
    assert "shipping it from the head's cache instead" in caplog.text
