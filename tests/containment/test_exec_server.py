"""A user's own server (``exec:`` images) is contained too, reachable only through the gateway on
loopback, and never outlives the gateway, SIGKILL included."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.containment.test_live import SECRETS, wait_for_status
from tests.support import ColdbrewServer, tar_gz

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="containment uses Linux namespaces")

SERVER = textwrap.dedent("""
    import json, os, subprocess, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    # A process of its own, as a server's workers would be: in its process group.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status, body):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(200 if self.path == "/ping" else 404, b"{}")

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen = {"env": dict(os.environ), "uid": os.getuid(), "pid": os.getpid(), "cwd": os.getcwd(),
                    "weights": open("weights.txt").read(), "child": child.pid}
            self._send(200, json.dumps(seen).encode())

        def log_message(self, *args):
            pass

    host = os.environ.get("BIND_HOST", os.environ["COLDBREW_BIND_TO_HOST"])
    HTTPServer((host, int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler).serve_forever()
""")


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[ColdbrewServer]:
    srv = ColdbrewServer(tmp_path / "data", env={**SECRETS, "COLDBREW_WORKER_IDS": "auto"}).start()
    yield srv
    srv.stop()


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "byo.tar.gz"
    path.write_bytes(tar_gz({"serve.py": SERVER.encode(), "weights.txt": b"42"}))
    return path


def deploy(
    sm: Any, name: str, archive: Path, environment: dict[str, str] | None = None, **model: Any
) -> None:
    sm.create_model(
        ModelName=name,
        PrimaryContainer={
            "Image": f"exec:{sys.executable} serve.py",
            "ModelDataUrl": archive.as_uri(),
            "Environment": environment or {},
        },
        ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew",
        **model,
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


def test_exec_server_is_contained_and_dies_with_a_killed_gateway(
    server: ColdbrewServer, archive: Path
) -> None:
    sm = server.client("sagemaker")
    deploy(sm, "byo", archive)
    wait_for_status(sm, "byo", "InService")
    response = server.client("sagemaker-runtime").invoke_endpoint(EndpointName="byo", Body=b"{}")
    seen = json.loads(response["Body"].read())
    assert seen["weights"] == "42"
    assert seen["cwd"] == seen["env"]["SM_MODEL_DIR"]
    for name in SECRETS:
        assert name not in seen["env"]
    if os.geteuid() == 0:
        assert seen["uid"] != 0
    exec_server = psutil.Process(seen["pid"])
    assert exec_server.is_running()
    # Its own process group, so stopping it stops what it started too.
    assert os.getpgid(exec_server.pid) == exec_server.pid

    server.kill()
    deadline = time.monotonic() + 30
    while _alive(exec_server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(exec_server), "the exec: server outlived the SIGKILLed gateway"


def test_exec_server_listening_beyond_loopback_is_refused(server: ColdbrewServer, archive: Path) -> None:
    sm = server.client("sagemaker")
    deploy(sm, "wide", archive, environment={"BIND_HOST": "0.0.0.0"})
    reason = wait_for_status(sm, "wide", "Failed")["FailureReason"]
    assert "listens on 0.0.0.0:" in reason and "bind it to 127.0.0.1" in reason


def test_exec_server_with_network_isolation_is_refused(server: ColdbrewServer, archive: Path) -> None:
    sm = server.client("sagemaker")
    deploy(sm, "isolated-byo", archive, EnableNetworkIsolation=True)
    reason = wait_for_status(sm, "isolated-byo", "Failed")["FailureReason"]
    assert "EnableNetworkIsolation is not supported with a serve command of your own" in reason


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_stopping_an_exec_server_stops_its_process_group(server: ColdbrewServer, archive: Path) -> None:
    sm = server.client("sagemaker")
    deploy(sm, "byo-stop", archive)
    wait_for_status(sm, "byo-stop", "InService")
    seen = json.loads(
        server.client("sagemaker-runtime").invoke_endpoint(EndpointName="byo-stop", Body=b"{}")["Body"].read()
    )
    exec_server, child = psutil.Process(seen["pid"]), psutil.Process(seen["child"])
    assert os.getpgid(child.pid) == exec_server.pid
    server.stop(signal.SIGTERM)
    assert not _alive(exec_server)
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "what the exec: server started outlived its stop"
