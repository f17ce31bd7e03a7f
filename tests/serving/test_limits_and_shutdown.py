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
            response = runtime.invoke_endpoint(EndpointName="slow", Body=json.dumps(payload),
                                               ContentType="application/json")
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
        assert not [pid for pid in workers if psutil.pid_exists(pid) and
                    psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    finally:
        server.stop()
