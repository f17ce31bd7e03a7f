"""Zygotes through a real server (issue 18): the zygote of a runtime no endpoint uses is stopped
after ``COLDBREW_ZYGOTE_IDLE_S`` and started again by the next deploy of that runtime; the
zygotes' memory comes out of the memory budget a deploy is checked against."""

from __future__ import annotations

import io
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import joblib
import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ColdbrewServer, deploy_serverless, tar_gz, wait_for_status, zygote_of

PPID = textwrap.dedent("""
    import json, os
    import joblib

    def model_fn(model_dir):
        return joblib.load(os.path.join(model_dir, "model.joblib"))

    def input_fn(body, content_type):
        return json.loads(body)

    def predict_fn(rows, model):
        return {"predictions": model.predict(rows).tolist(), "ppid": os.getppid()}

    def output_fn(prediction, accept):
        return json.dumps(prediction), "application/json"
""")


def samples(server: ColdbrewServer) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def zygote_states(server: ColdbrewServer) -> dict[str, str]:
    return {
        labels["runtime"]: labels["state"] for n, labels, _ in samples(server) if n == "coldbrew_zygote_state"
    }


def generic_zygote_pids(server: ColdbrewServer) -> set[int]:
    assert server.process is not None
    return {
        c.pid
        for c in psutil.Process(server.process.pid).children()
        if "coldbrew.worker.zygote" in " ".join(c.cmdline()) and "zygote-generic-" in " ".join(c.cmdline())
    }


def wait_until(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def archive_with(tmp_path: Path, model: Any) -> Path:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    path = tmp_path / "ppid.tar.gz"
    path.write_bytes(tar_gz({"model.joblib": buffer.getvalue(), "code/inference.py": PPID.encode()}))
    return path


def invoke_ppid(server: ColdbrewServer, name: str) -> int:
    response = server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=name, Body=json.dumps([[0.01] * 10]), ContentType="application/json"
    )
    return zygote_of(int(json.loads(response["Body"].read())["ppid"]))


def test_unused_zygote_is_stopped_and_started_again_by_the_next_deploy(
    tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    archive = archive_with(tmp_path, model_archive[1])
    # COLDBREW_RUNTIME: the generic runtime's zygote, not the eager scikit-learn one (always kept).
    generic = {"COLDBREW_RUNTIME": "generic"}
    server = ColdbrewServer(tmp_path / "data", env={"COLDBREW_ZYGOTE_IDLE_S": "0.5"}).start()
    try:
        sm = server.client()
        deploy_serverless(sm, "first", archive.as_uri(), environment=generic)
        wait_for_status(sm, "first", "InService")
        first_zygote = invoke_ppid(server, "first")
        assert first_zygote in generic_zygote_pids(server)

        # While the endpoint exists (scaled to zero or not) its runtime is in use: kept.
        assert zygote_states(server)["generic"] == "ready"
        sm.delete_endpoint(EndpointName="first")
        wait_until(
            "the unused generic zygote is stopped", lambda: zygote_states(server).get("generic") == "stopped"
        )
        wait_until("its process is gone", lambda: not psutil.pid_exists(first_zygote))
        assert zygote_states(server)["sklearn"] == "ready"

        # The next deploy of the runtime starts it again, and its worker is forked from it.
        deploy_serverless(sm, "second", archive.as_uri(), environment=generic)
        wait_for_status(sm, "second", "InService", timeout=120)
        second_zygote = invoke_ppid(server, "second")
        assert second_zygote != first_zygote
        assert second_zygote in generic_zygote_pids(server)
        assert zygote_states(server)["generic"] == "ready"
    finally:
        server.stop()


def test_the_zygotes_memory_comes_out_of_the_budget(tmp_path: Path, model_archive: tuple[Path, Any]) -> None:
    # 1024 MB of ProvisionedConcurrency fits a budget of 1100 MB only if nothing else holds any.
    server = ColdbrewServer(tmp_path / "data", env={"COLDBREW_MEMORY_BUDGET_MB": "1100"}).start()
    try:

        def helpers_mb() -> float:
            return next(v for n, _, v in samples(server) if n == "coldbrew_memory_budget_helpers_megabytes")

        wait_until("the scikit-learn zygote's memory is in the budget", lambda: helpers_mb() > 76)
        sm = server.client()
        deploy_serverless(sm, "provisioned", model_archive[0].as_uri(), memory=1024, provisioned=1)
        described = wait_for_status(sm, "provisioned", "Failed")
        reason = described["FailureReason"]
        assert "memory budget of 1100 MB" in reason and "zygotes hold" in reason, reason
    finally:
        server.stop()
