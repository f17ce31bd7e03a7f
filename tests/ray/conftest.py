"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``) and a coldbrew
server driving it with ``--backend ray``.

Every test module here that needs Ray is marked ``ray`` (``pytestmark``), which the default run
excludes (Ray's start is slow); CI runs them as a step of their own:
``python -m pytest -m ray tests/ray``.
"""

from __future__ import annotations

import io
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import joblib
import pytest

from tests.support import ColdbrewServer, tar_gz

MB = 1024 * 1024
HEAD_MEMORY_MB = 600
"""Less than any test endpoint's MemorySizeInMB: the head's agent runs, but nothing fits there, so
environments land on the worker nodes (the head keeps the gateway)."""
NODE_MEMORY_MB = 2560
"""Two 1024 MB environments per worker node, not three."""

# The model answers with the node and pid that served it, and can be told to sleep or fail; its
# load sleeps LOAD_SLEEP_S and prints the node it runs on (for its CloudWatch Logs stream).
INFERENCE_PY = textwrap.dedent("""
    import json
    import os
    import time

    import joblib
    import numpy as np

    def model_fn(model_dir):
        time.sleep(float(os.environ.get("LOAD_SLEEP_S", "0")))
        print("model loading on node", os.environ.get("COLDBREW_NODE_ID"), flush=True)
        return joblib.load(os.path.join(model_dir, "model.joblib"))

    def input_fn(body, content_type, context):
        return json.loads(body)

    def predict_fn(data, model, context):
        if data.get("fail"):
            raise ValueError("asked to fail")
        if data.get("sleep"):
            time.sleep(data["sleep"])
        return {
            "predictions": model.predict(np.array(data["rows"])).tolist(),
            "pid": os.getpid(),
            "node": os.environ.get("COLDBREW_NODE_ID"),
            "version": os.environ.get("MODEL_VERSION", "1"),
        }

    def output_fn(prediction, accept, context):
        return json.dumps(prediction), "application/json"
""")


class RayCluster:
    """The cluster, and the worker nodes a test added (to remove one mid-traffic)."""

    def __init__(self) -> None:
        # Imported here, not at the top: the default run collects this directory (and deselects
        # its tests) without importing Ray.
        pytest.importorskip("ray")
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "memory": HEAD_MEMORY_MB * MB,
                "object_store_memory": 100 * MB,
                "include_dashboard": False,
            },
        )
        self.workers: list[Any] = []

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    @property
    def head_id(self) -> str:
        head = self.cluster.head_node
        assert head is not None  # initialize_head=True
        return str(head.node_id)

    def add_node(self, memory_mb: int = NODE_MEMORY_MB, cpus: int = 2) -> Any:
        node = self.cluster.add_node(num_cpus=cpus, memory=memory_mb * MB, object_store_memory=100 * MB)
        self.workers.append(node)
        return node

    def remove_node(self, node: Any) -> None:
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def shutdown(self) -> None:
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """A head and two worker nodes, each with its own resources; shut down whole after the module."""
    cluster = RayCluster()
    try:
        cluster.add_node()
        cluster.add_node()
        cluster.cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local wheel directory: a model's requirements.txt installs from it, offline."""
    from tests.sdk.wheels import build_wheel

    directory = tmp_path_factory.mktemp("ray-wheels")
    build_wheel(directory, "coldbrew-test-scaler", "1.0", {"coldbrew_test_scaler.py": "FACTOR = 1000.0\n"})
    return directory


@pytest.fixture(scope="module")
def ray_server(
    tmp_path_factory: pytest.TempPathFactory, ray_cluster: RayCluster, wheelhouse: Path
) -> Iterator[ColdbrewServer]:
    """coldbrew serve --backend ray against the module's cluster, idle environments released fast."""
    server = ColdbrewServer(
        tmp_path_factory.mktemp("coldbrew-ray") / "data",
        env={
            "COLDBREW_BACKEND": "ray",
            "COLDBREW_RAY_ADDRESS": ray_cluster.address,
            "COLDBREW_IDLE_TIMEOUT_S": "2",
            "COLDBREW_PIP_ARGS": f"--no-index --find-links {wheelhouse}",
        },
    )
    # The nodes fetch s3:// models from the server's embedded S3 themselves (they run here).
    server.env["COLDBREW_RAY_NODE_S3"] = server.url
    server.start(timeout=120)
    try:
        # Every node's agent ready before the tests deploy: placement does not wait for an agent
        # that is still starting while a ready node has room, so on a loaded machine an
        # endpoint's first environments could all land on the node whose agent was ready first.
        nodes = [ray_cluster.head_id, *(str(n.node_id) for n in ray_cluster.workers)]
        deadline = time.monotonic() + 120
        while not all(f"coldbrew agent ready on node {n[:8]}" in server.log() for n in nodes):
            if time.monotonic() > deadline:
                raise AssertionError(f"not every node's coldbrew agent was ready within 120 s: {nodes}")
            time.sleep(0.2)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ray_sm(ray_server: ColdbrewServer) -> Any:
    return ray_server.client("sagemaker")


@pytest.fixture(scope="module")
def ray_runtime(ray_server: ColdbrewServer) -> Any:
    return ray_server.client("sagemaker-runtime")


@pytest.fixture(scope="session")
def node_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model.tar.gz: a random forest trained on scikit-learn's diabetes data, with code that
    reports the node it ran on."""
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    features, target = load_diabetes(return_X_y=True)
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(features, target)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    path = tmp_path_factory.mktemp("ray-model") / "model.tar.gz"
    path.write_bytes(tar_gz({"model.joblib": buffer.getvalue(), "code/inference.py": INFERENCE_PY.encode()}))
    return path


class Budget(NamedTuple):
    """Serving's memory budget, in MB, from ``GET /metrics``."""

    total: int
    zygotes: int
    """What the zygotes of every node hold of it."""
    used: int
    """What environments hold (or are starting with)."""

    @property
    def free(self) -> int:
        return self.total - self.zygotes - self.used


def budget(server: ColdbrewServer) -> Budget:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return Budget(
        int(values["coldbrew_memory_budget_megabytes"]),
        int(values["coldbrew_memory_budget_helpers_megabytes"]),
        int(values["coldbrew_memory_budget_used_megabytes"]),
    )
