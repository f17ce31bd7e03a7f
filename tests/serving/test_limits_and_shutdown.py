"""Invocation timeout, and a graceful shutdown that finishes in-flight work and ends every worker."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
from botocore.exceptions import ClientError

from tests.support import ColdbrewServer, deploy_serverless, wait_for_status, worker_pids


def test_timeout_and_graceful_shutdown(tmp_path: Path, scripted_archive: Path) -> None:
    server = ColdbrewServer(tmp_path / "data", env={"COLDBREW_INVOCATION_TIMEOUT_S": "2"}).start()
    try:
        sm, runtime = server.client(), server.client("sagemaker-runtime", read_timeout=30)
        deploy_serverless(sm, "slow", scripted_archive.as_uri(), max_concurrency=3, provisioned=1)
        wait_for_status(sm, "slow", "InService")

        def call(payload: dict[str, Any]) -> dict[str, Any]:
            response = runtime.invoke_endpoint(
                EndpointName="slow", Body=json.dumps(payload), ContentType="application/json"
            )
            return json.loads(response["Body"].read())

        rows = [[0.0] * 10]
        with pytest.raises(ClientError) as excinfo:
            call({"rows": rows, "sleep": 10})
        assert excinfo.value.response["Error"]["Code"] == "ModelError"
        assert "ran past the 2 s limit" in excinfo.value.response["Error"]["Message"]
        assert call({"rows": rows})["predictions"]

        workers = worker_pids(server)
        assert workers
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(call, {"rows": rows, "sleep": 1.0})
            time.sleep(0.3)
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            # The request that was running when the signal came still gets its answer.
            assert in_flight.result()["predictions"]
        assert server.stop(timeout=30) in (0, -signal.SIGTERM)
        assert not [
            pid
            for pid in workers
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ]
    finally:
        server.stop()


@pytest.mark.parametrize("cgroups", ["true", "false"])
def test_memory_limit_with_and_without_cgroups(tmp_path: Path, scripted_archive: Path, cgroups: str) -> None:
    server = ColdbrewServer(tmp_path / "data", env={"COLDBREW_MEMORY_CGROUPS": cgroups}).start()
    try:
        sm, runtime = server.client(), server.client("sagemaker-runtime", read_timeout=30)
        deploy_serverless(sm, "hog", scripted_archive.as_uri())
        wait_for_status(sm, "hog", "InService")
        with pytest.raises(ClientError) as excinfo:
            runtime.invoke_endpoint(
                EndpointName="hog",
                Body=json.dumps({"rows": [[0.0] * 10], "hog_mb": 1400}),
                ContentType="application/json",
            )
        assert "more than its memory size of 1024 MB" in excinfo.value.response["Error"]["Message"]
        ok = runtime.invoke_endpoint(
            EndpointName="hog", Body=json.dumps({"rows": [[0.0] * 10]}), ContentType="application/json"
        )
        assert json.loads(ok["Body"].read())["predictions"]
    finally:
        server.stop()
    enforced_by_cgroup = "worker memory limits are enforced by cgroups" in server.log()
    if cgroups == "false":
        assert not enforced_by_cgroup
    elif not enforced_by_cgroup:
        # Hosts without a writable memory cgroup fall back to the watchdog; say so in the output.
        print("memory cgroups are not available on this host; the RSS watchdog was used")
