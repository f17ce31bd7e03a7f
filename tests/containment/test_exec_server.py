"""A user's own server (``exec:`` images) is contained too: it runs in a network namespace of its
own, reachable only through the gateway (by its relay's Unix socket), not from the host's loopback
nor from another endpoint's worker; with EnableNetworkIsolation it serves with no network; it and
its relay never outlive the gateway, SIGKILL included."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.containment.test_live import SECRETS, Listener, probe_archive, wait_for_status
from tests.support import ColdbrewServer, deploy_serverless, tar_gz

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="containment uses Linux namespaces")

# Whether this host lets coldbrew create a network namespace (as root, or in a user namespace of
# its own), asked the way coldbrew does.
NETNS = (
    subprocess.run(
        [sys.executable, "-c", "from coldbrew.worker.sandbox import _isolate_network; _isolate_network()"],
        capture_output=True,
    ).returncode
    == 0
)
needs_netns = pytest.mark.skipif(not NETNS, reason="this host allows no network namespace")

SERVER = textwrap.dedent("""
    import json, os, socket, subprocess, sys
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
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            seen = {"env": dict(os.environ), "uid": os.getuid(), "pid": os.getpid(), "cwd": os.getcwd(),
                    "weights": open("weights.txt").read(), "child": child.pid}
            if "connect" in request:  # a port on the host's loopback
                try:
                    socket.create_connection(("127.0.0.1", request["connect"]), 5).close()
                    seen["connect"] = "ok"
                except OSError as exc:
                    seen["connect"] = type(exc).__name__
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


def invoke(server: ColdbrewServer, name: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
    response = server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=name, Body=json.dumps(request or {}).encode()
    )
    seen: dict[str, Any] = json.loads(response["Body"].read())
    return seen


def relay_of(exec_server: psutil.Process) -> psutil.Process:
    """The relay coldbrew runs in the server's network namespace and process group."""
    (relay,) = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "coldbrew.backends.relay" in " ".join(p.info["cmdline"] or [])
        and os.getpgid(p.pid) == exec_server.pid
    ]
    return relay


def netns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 5).close()
    except ConnectionRefusedError:
        return True
    return False


def accepted(listener: Listener, count: int) -> bool:
    """Whether ``listener`` has accepted ``count`` connections (its thread counts each a moment
    after the client's connect returns)."""
    deadline = time.monotonic() + 10
    while listener.accepted < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return listener.accepted == count


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


@needs_netns
def test_exec_server_is_contained_and_dies_with_a_killed_gateway(
    server: ColdbrewServer, archive: Path
) -> None:
    sm = server.client("sagemaker")
    deploy(sm, "byo", archive)
    wait_for_status(sm, "byo", "InService")
    seen = invoke(server, "byo")
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
    # Its own network namespace, shared with its relay only, which runs as the server's user.
    relay = relay_of(exec_server)
    assert netns(exec_server.pid) == netns(relay.pid) != netns(os.getpid())
    assert relay.uids().real == exec_server.uids().real
    # And its memory cgroup (where the host gives the server one): it counts against its size.
    assert (
        Path(f"/proc/{relay.pid}/cgroup").read_text() == Path(f"/proc/{exec_server.pid}/cgroup").read_text()
    )

    server.kill()
    deadline = time.monotonic() + 30
    while (_alive(exec_server) or _alive(relay)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(exec_server), "the exec: server outlived the SIGKILLed gateway"
    assert not _alive(relay), "the exec: server's relay outlived the SIGKILLed gateway"


@needs_netns
def test_only_the_gateway_reaches_an_exec_server(
    server: ColdbrewServer, archive: Path, tmp_path: Path
) -> None:
    sm = server.client("sagemaker")
    deploy(sm, "byo-private", archive)
    deploy_serverless(sm, "neighbour", str(probe_archive(tmp_path / "probe.tar.gz", n_estimators=2)))
    wait_for_status(sm, "byo-private", "InService")
    wait_for_status(sm, "neighbour", "InService")
    seen = invoke(server, "byo-private")
    port = int(seen["env"]["SAGEMAKER_BIND_TO_PORT"])
    # Served through the gateway, but its port does not exist on the host's loopback: not for the
    # test, nor for another endpoint's worker (which reaches the host's loopback, the listener).
    assert refused(port)
    listener = Listener()
    request = {"row": [0.0] * 10, "gateway": 0, "data_dir": "/", "db": "/", "port": port}
    neighbour = server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="neighbour", Body=json.dumps(request), ContentType="application/json"
    )
    assert json.loads(neighbour["Body"].read())["connect"] == "ConnectionRefusedError"
    request["port"] = listener.port
    neighbour = server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="neighbour", Body=json.dumps(request), ContentType="application/json"
    )
    assert json.loads(neighbour["Body"].read())["connect"] == "ok"
    # Nor does the host's loopback exist for the server, without EnableNetworkIsolation too.
    assert invoke(server, "byo-private", {"connect": listener.port})["connect"] == "ConnectionRefusedError"
    assert accepted(listener, 1)


@needs_netns
def test_exec_server_with_network_isolation_serves_without_network(
    server: ColdbrewServer, archive: Path
) -> None:
    sm = server.client("sagemaker")
    deploy(sm, "isolated-byo", archive, EnableNetworkIsolation=True)
    wait_for_status(sm, "isolated-byo", "InService")
    listener = Listener()
    seen = invoke(server, "isolated-byo", {"connect": listener.port})
    assert seen["connect"] == "ConnectionRefusedError"
    assert listener.accepted == 0
    assert refused(int(seen["env"]["SAGEMAKER_BIND_TO_PORT"]))
    # Listening on every address of a namespace that has only loopback reaches nobody else.
    deploy(sm, "isolated-wide", archive, environment={"BIND_HOST": "0.0.0.0"}, EnableNetworkIsolation=True)
    wait_for_status(sm, "isolated-wide", "InService")
    assert refused(int(invoke(server, "isolated-wide")["env"]["SAGEMAKER_BIND_TO_PORT"]))
    # The host's network is what isolation forbids.
    deploy(
        sm,
        "isolated-host",
        archive,
        environment={"COLDBREW_EXEC_NETWORK": "host"},
        EnableNetworkIsolation=True,
    )
    reason = wait_for_status(sm, "isolated-host", "Failed")["FailureReason"]
    assert "COLDBREW_EXEC_NETWORK=host gives the server the host's network" in reason


def test_exec_server_on_the_hosts_network(server: ColdbrewServer, archive: Path) -> None:
    """COLDBREW_EXEC_NETWORK=host: the network, and a port every local process can reach."""
    sm = server.client("sagemaker")
    deploy(sm, "byo-host", archive, environment={"COLDBREW_EXEC_NETWORK": "host"})
    wait_for_status(sm, "byo-host", "InService")
    listener = Listener()
    seen = invoke(server, "byo-host", {"connect": listener.port})
    assert seen["connect"] == "ok" and accepted(listener, 1)
    assert netns(seen["pid"]) == netns(os.getpid())
    assert not refused(int(seen["env"]["SAGEMAKER_BIND_TO_PORT"]))
    # There, one listening beyond loopback is refused: other machines could reach it.
    deploy(sm, "wide", archive, environment={"BIND_HOST": "0.0.0.0", "COLDBREW_EXEC_NETWORK": "host"})
    reason = wait_for_status(sm, "wide", "Failed")["FailureReason"]
    assert "listens on 0.0.0.0:" in reason and "bind it to 127.0.0.1" in reason
    with pytest.raises(sm.exceptions.ClientError) as excinfo:
        deploy(sm, "byo-bogus", archive, environment={"COLDBREW_EXEC_NETWORK": "bridge"})
    assert excinfo.value.response["Error"]["Code"] == "ValidationException"
    assert "COLDBREW_EXEC_NETWORK='bridge' is not valid: use private or host." in str(excinfo.value)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@needs_netns
def test_stopping_an_exec_server_stops_its_process_group(server: ColdbrewServer, archive: Path) -> None:
    sm = server.client("sagemaker")
    deploy(sm, "byo-stop", archive)
    wait_for_status(sm, "byo-stop", "InService")
    seen = invoke(server, "byo-stop")
    exec_server, child = psutil.Process(seen["pid"]), psutil.Process(seen["child"])
    relay = relay_of(exec_server)
    assert os.getpgid(child.pid) == exec_server.pid
    server.stop(signal.SIGTERM)
    assert not _alive(exec_server)
    deadline = time.monotonic() + 30
    while (_alive(child) or _alive(relay)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "what the exec: server started outlived its stop"
    assert not _alive(relay), "the exec: server's relay outlived its stop"


@pytest.mark.skipif(NETNS, reason="this host allows network namespaces")
def test_without_network_namespaces_exec_servers_share_the_hosts_network(
    server: ColdbrewServer, archive: Path
) -> None:
    """Not root, and no unprivileged user namespaces: an exec: server serves on the host's network
    (its port reachable from the host, as with COLDBREW_EXEC_NETWORK=host), with a warning in the
    log; one with EnableNetworkIsolation is refused rather than run with network."""
    sm = server.client("sagemaker")
    deploy(sm, "byo-fallback", archive)
    wait_for_status(sm, "byo-fallback", "InService")
    seen = invoke(server, "byo-fallback")
    assert netns(seen["pid"]) == netns(os.getpid())
    assert not refused(int(seen["env"]["SAGEMAKER_BIND_TO_PORT"]))
    assert "this host lets coldbrew create no network namespace" in server.log()
    deploy(sm, "isolated-fallback", archive, EnableNetworkIsolation=True)
    reason = wait_for_status(sm, "isolated-fallback", "Failed")["FailureReason"]
    assert (
        "EnableNetworkIsolation needs a network namespace, which this host does not let coldbrew create"
        in reason
    )
