"""The zygote: forked workers behave exactly like fresh ones, and a dead zygote is replaced."""

from __future__ import annotations

import io
import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import psutil
import pytest

from tests.support import ColdbrewServer, deploy_serverless, tar_gz, wait_for_status, zygote_of

# Reports what a model would see of its process: predictions, environment, limits, randomness.
INTROSPECT = textwrap.dedent("""
    import json, os, resource, sys
    import joblib
    import numpy as np

    def model_fn(model_dir):
        return joblib.load(os.path.join(model_dir, "model.joblib"))

    def _memory_limit():
        for line in open("/proc/self/cgroup"):
            _, controllers, path = line.strip().split(":", 2)
            if "memory" in controllers.split(","):
                try:
                    return int(open(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes").read())
                except OSError:
                    return None
        return None

    def predict_fn(data, model):
        rows = np.array(json.loads(data))
        return {
            "predictions": model.predict(rows).tolist(),
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "env": {k: v for k, v in os.environ.items()
                    if k.startswith(("SM_", "OMP_", "OPENBLAS_", "MKL_", "MODEL_", "COLDBREW_IMAGE"))},
            "cwd": os.getcwd(),
            "limits": {name: resource.getrlimit(getattr(resource, name))
                       for name in ("RLIMIT_NOFILE", "RLIMIT_AS", "RLIMIT_STACK")},
            "memory_limit": _memory_limit(),
            "random": float(np.random.random()),
            "threads": len(os.listdir("/proc/self/task")),
            "sys_path_tail": sys.path[-3:],
        }

    def input_fn(body, content_type):
        return body

    def output_fn(prediction, accept):
        return json.dumps(prediction), "application/json"
""")


@pytest.fixture(scope="module")
def introspect_archive(tmp_path_factory: pytest.TempPathFactory, model_archive: tuple[Path, Any]) -> Path:
    buffer = io.BytesIO()
    joblib.dump(model_archive[1], buffer)
    path = tmp_path_factory.mktemp("introspect") / "model.tar.gz"
    path.write_bytes(tar_gz({"model.joblib": buffer.getvalue(), "code/inference.py": INTROSPECT.encode()}))
    return path


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdbrewServer]:
    server = ColdbrewServer(
        tmp_path_factory.mktemp("fresh") / "data", env={"COLDBREW_ZYGOTE": "false"}
    ).start()
    yield server
    server.stop()


def zygote_pids(server: ColdbrewServer) -> set[int]:
    assert server.process is not None
    return {
        c.pid
        for c in psutil.Process(server.process.pid).children()
        if "coldbrew.worker.zygote" in " ".join(c.cmdline())
    }


def describe_worker(server: ColdbrewServer, name: str, archive: Path) -> dict[str, Any]:
    sm, runtime = server.client(), server.client("sagemaker-runtime")
    deploy_serverless(sm, name, archive.as_uri(), memory=2048, environment={"MODEL_FLAVOUR": "test"})
    wait_for_status(sm, name, "InService")
    rows = [[0.02] * 10, [-0.03] * 10]
    response = runtime.invoke_endpoint(
        EndpointName=name, Body=json.dumps(rows), ContentType="application/json"
    )
    result: dict[str, Any] = json.loads(response["Body"].read())
    return result


def wait_for_zygote(server: ColdbrewServer, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = zygote_pids(server)
        if pids:
            return pids.pop()
        time.sleep(0.05)
    raise AssertionError("no zygote running")


def test_forked_worker_behaves_like_a_fresh_one(
    server: ColdbrewServer, fresh_server: ColdbrewServer, introspect_archive: Path
) -> None:
    zygote = wait_for_zygote(server)
    # Ready to fork only once it has imported everything.
    deadline = time.monotonic() + 30
    forked = describe_worker(server, "forked", introspect_archive)
    while zygote_of(forked["ppid"]) != zygote and time.monotonic() < deadline:
        time.sleep(0.2)
        forked = describe_worker(server, f"forked-{int(time.monotonic() * 1000)}", introspect_archive)
    fresh = describe_worker(fresh_server, "fresh", introspect_archive)
    assert zygote_of(forked["ppid"]) == zygote  # really forked by the zygote (or its template)
    assert fresh["ppid"] == fresh_server.process.pid  # type: ignore[union-attr]
    assert not zygote_pids(fresh_server)

    assert forked["predictions"] == fresh["predictions"]
    assert forked["limits"] == fresh["limits"]
    assert forked["threads"] == fresh["threads"]
    assert forked["sys_path_tail"] == fresh["sys_path_tail"]

    # Same variables with the same values, paths compared below each server's own data dir.
    def relative(result: dict[str, Any], srv: ColdbrewServer) -> dict[str, str]:
        return {k: v.replace(str(srv.data_dir), "<data>") for k, v in result["env"].items()}

    assert relative(forked, server) == relative(fresh, fresh_server)
    assert forked["env"]["MODEL_FLAVOUR"] == "test"
    assert forked["env"]["OMP_NUM_THREADS"] == fresh["env"]["OMP_NUM_THREADS"]
    assert forked["memory_limit"] == fresh["memory_limit"]
    if forked["memory_limit"] is not None:
        assert forked["memory_limit"] == 2048 * 1024 * 1024


def test_forked_workers_draw_their_own_random_numbers(
    server: ColdbrewServer, introspect_archive: Path
) -> None:
    wait_for_zygote(server)
    first = describe_worker(server, "random-a", introspect_archive)
    second = describe_worker(server, "random-b", introspect_archive)
    assert first["pid"] != second["pid"]
    assert first["random"] != second["random"]


def test_dead_zygote_is_restarted(server: ColdbrewServer, introspect_archive: Path) -> None:
    old = wait_for_zygote(server)
    psutil.Process(old).kill()
    # Meanwhile cold starts still work (a fresh interpreter stands in).
    assert describe_worker(server, "during-restart", introspect_archive)["predictions"]
    deadline = time.monotonic() + 30
    new = None
    while time.monotonic() < deadline:
        pids = zygote_pids(server) - {old}
        if pids:
            new = pids.pop()
            break
        time.sleep(0.05)
    assert new is not None
    after = None
    while time.monotonic() < deadline:
        after = describe_worker(server, f"after-restart-{int(time.monotonic() * 1000)}", introspect_archive)
        if zygote_of(after["ppid"]) == new:
            break
        time.sleep(0.2)
    assert after is not None and zygote_of(after["ppid"]) == new


def test_first_deploy_after_start_waits_for_the_zygote(tmp_path: Path, introspect_archive: Path) -> None:
    # Deployed at once after start, while the zygote is still importing: the load check's worker is
    # forked by it (and stays as the first warm environment) rather than started as a fresh
    # interpreter that would import everything again on the same cores.
    server = ColdbrewServer(tmp_path / "data").start()
    try:
        assert server.process is not None
        first = describe_worker(server, "first", introspect_archive)
        assert zygote_of(first["ppid"]) in zygote_pids(server)
        assert first["ppid"] != server.process.pid
    finally:
        server.stop()
