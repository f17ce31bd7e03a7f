"""Model code is contained (issue 14, points 2 and 3), tried from inside real workers.

A real server on loopback, started with secrets in its environment, serves a model whose
``inference.py`` reports what it can see and reach: its environment, its user, /proc/1/environ,
the gateway's environment, the data dir, another endpoint's model files, and a TCP listener the
test runs on loopback. Local model paths are read only under ``COLDBREW_MODEL_ROOTS``.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support import ColdbrewServer, deploy_serverless, sklearn_archive, tar_gz, worker_pids

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="containment uses Linux namespaces")

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not ROOT, reason="workers get users of their own only when the server is root"
)

SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAGATEWAYONLY",
    "AWS_SECRET_ACCESS_KEY": "gateway-secret-key",
    "AWS_SESSION_TOKEN": "gateway-session-token",
    "COLDBREW_TEST_SECRET": "gateway-coldbrew-secret",
    "UNRELATED_GATEWAY_VARIABLE": "gateway-only",
}

PROBE = textwrap.dedent("""
    import json, os, socket

    import joblib

    def model_fn(model_dir):
        return joblib.load(os.path.join(model_dir, "model.joblib"))

    def input_fn(body, content_type):
        return json.loads(body)

    def _attempt(action):
        try:
            action()
            return "ok"
        except Exception as exc:
            return type(exc).__name__

    def _read(path):
        with open(path, "rb") as f:
            f.read(1)

    def predict_fn(data, model):
        seen = {
            "uid": os.getuid(),
            "gid": os.getgid(),
            "env": dict(os.environ),
            "model_dir": os.environ["SM_MODEL_DIR"],
            "model_files": sorted(os.listdir(os.environ["SM_MODEL_DIR"])),
            "prediction": model.predict([data["row"]]).tolist(),
            "proc1_environ": _attempt(lambda: _read("/proc/1/environ")),
            "gateway_environ": _attempt(lambda: _read(f"/proc/{data['gateway']}/environ")),
            "data_dir": _attempt(lambda: os.listdir(data["data_dir"])),
            "db": _attempt(lambda: _read(data["db"])),
            "connect": _attempt(lambda: socket.create_connection(("127.0.0.1", data["port"]), 5).close()),
        }
        seen["paths"] = {path: _attempt(lambda: _read(path)) for path in data.get("paths", [])}
        return seen

    def output_fn(prediction, accept):
        return json.dumps(prediction), "application/json"
""")


class Listener:
    """A TCP listener on loopback that counts connections: what a worker without network
    isolation reaches, and one with it must not."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


def probe_archive(path: Path, n_estimators: int) -> Path:
    """The probe model: ``code/inference.py`` and a random forest trained here."""
    sklearn_archive(path, n_estimators=n_estimators)
    import tarfile

    with tarfile.open(path) as tar:
        model = tar.extractfile("model.joblib")
        assert model is not None
        weights = model.read()
    path.write_bytes(tar_gz({"model.joblib": weights, "code/inference.py": PROBE.encode()}))
    return path


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-roots")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, roots: Path) -> Iterator[ColdbrewServer]:
    env = {
        **SECRETS,
        "PASSED_ON": "the operator passes this one on",
        "COLDBREW_WORKER_ENV_PASSTHROUGH": "PASSED_ON",
        "COLDBREW_MODEL_ROOTS": str(roots),
        "COLDBREW_WORKER_IDS": "auto",  # the default, which tests/support.py turns off for other tests
    }
    srv = ColdbrewServer(tmp_path_factory.mktemp("containment") / "data", env=env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sm(server: ColdbrewServer) -> Any:
    return server.client("sagemaker")


@pytest.fixture(scope="module")
def listener() -> Listener:
    return Listener()


@pytest.fixture(scope="module")
def endpoints(server: ColdbrewServer, sm: Any, roots: Path) -> dict[str, str]:
    """Three endpoints on two models: ``alpha`` and ``isolated`` serve the same content (one
    cache entry), with network isolation on ``isolated``; ``beta`` serves another model."""
    alpha = probe_archive(roots / "alpha.tar.gz", n_estimators=3)
    beta = probe_archive(roots / "beta.tar.gz", n_estimators=4)
    deploy_serverless(sm, "alpha", alpha.as_uri(), environment={"MODEL_SETTING": "alpha's own"})
    deploy_serverless(sm, "beta", str(beta))
    sm.create_model(
        ModelName="isolated",
        PrimaryContainer={"Image": "coldbrew/sklearn", "ModelDataUrl": alpha.as_uri()},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew",
        EnableNetworkIsolation=True,
    )
    sm.create_endpoint_config(
        EndpointConfigName="isolated-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "isolated",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName="isolated", EndpointConfigName="isolated-config")
    for name in ("alpha", "beta", "isolated"):
        described = wait_for_status(sm, name, "InService", timeout=120)
        assert described["EndpointStatus"] == "InService", described.get("FailureReason")
    return {"alpha": str(alpha), "beta": str(beta)}


def wait_for_status(sm: Any, name: str, status: str, timeout: float = 120.0) -> dict[str, Any]:
    """The endpoint once it is ``status``; fails at once if it settles in the other outcome."""
    deadline = time.monotonic() + timeout
    while True:
        described: dict[str, Any] = sm.describe_endpoint(EndpointName=name)
        if described["EndpointStatus"] == status:
            return described
        if described["EndpointStatus"] in {"InService", "Failed"} or time.monotonic() > deadline:
            raise AssertionError(f"{name} is {described['EndpointStatus']}: {described.get('FailureReason')}")
        time.sleep(0.05)


def cache_entries(server: ColdbrewServer) -> list[Path]:
    return sorted((server.data_dir / "artifacts" / "sha256").iterdir())


def probe(server: ColdbrewServer, endpoint: str, listener: Listener, paths: list[str] = ()) -> dict[str, Any]:
    assert server.process is not None
    request = {
        "row": [0.0] * 10,
        "gateway": server.process.pid,
        "data_dir": str(server.data_dir),
        "db": str(server.data_dir / "coldbrew.db"),
        "port": listener.port,
        "paths": list(paths),
    }
    response = server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=endpoint, Body=json.dumps(request), ContentType="application/json"
    )
    seen: dict[str, Any] = json.loads(response["Body"].read())
    return seen


def test_workers_get_only_their_environment(
    server: ColdbrewServer, endpoints: dict[str, str], listener: Listener
) -> None:
    seen = probe(server, "alpha", listener)
    env = seen["env"]
    for name, value in SECRETS.items():
        assert name not in env, f"{name} leaked into the worker"
        assert value not in json.dumps(env)
    assert not any(name.startswith("COLDBREW_") and name not in {"COLDBREW_IMAGE"} for name in env), env
    assert env["PASSED_ON"] == "the operator passes this one on"
    assert env["MODEL_SETTING"] == "alpha's own"
    assert env["SM_MODEL_DIR"] == seen["model_dir"]
    assert env["HOME"] != os.environ.get("HOME")
    assert "PATH" in env
    assert seen["model_files"] == ["code", "model.joblib"]
    assert len(seen["prediction"]) == 1


def test_a_worker_cannot_read_the_gateways_secrets_or_data(
    server: ColdbrewServer, endpoints: dict[str, str], listener: Listener
) -> None:
    seen = probe(server, "alpha", listener)
    assert seen["gateway_environ"] == "PermissionError"
    assert seen["data_dir"] == "PermissionError"
    assert seen["db"] == "PermissionError"
    if ROOT:
        assert seen["proc1_environ"] == "PermissionError"


@needs_root
def test_each_endpoint_runs_as_its_own_user(
    server: ColdbrewServer, endpoints: dict[str, str], listener: Listener
) -> None:
    alpha, beta = probe(server, "alpha", listener), probe(server, "beta", listener)
    assert alpha["uid"] != 0 and beta["uid"] != 0
    assert alpha["uid"] != beta["uid"]
    assert alpha["gid"] != beta["gid"]
    assert probe(server, "alpha", listener)["uid"] == alpha["uid"]


@needs_root
def test_a_worker_cannot_read_another_endpoints_model(
    server: ColdbrewServer, endpoints: dict[str, str], listener: Listener
) -> None:
    beta = probe(server, "beta", listener)  # beta has a worker now
    theirs = [str(entry / "model.joblib") for entry in cache_entries(server)]
    assert len(theirs) == 2
    beta_workers = [pid for pid in worker_pids(server) if psutil.Process(pid).uids().real == beta["uid"]]
    assert beta_workers
    # Its model as it sees it, through its mount namespace.
    through_proc = [f"/proc/{pid}/root{beta['model_dir']}/model.joblib" for pid in beta_workers]
    seen = probe(server, "alpha", listener, paths=[*theirs, *through_proc])
    assert set(seen["paths"].values()) == {"PermissionError"}, seen["paths"]
    # Its own model it reads through its mountpoint, which shows it nothing else.
    assert seen["model_files"] == ["code", "model.joblib"]


def test_network_isolation(
    server: ColdbrewServer, sm: Any, endpoints: dict[str, str], listener: Listener
) -> None:
    assert sm.describe_model(ModelName="isolated")["EnableNetworkIsolation"] is True
    assert sm.describe_model(ModelName="alpha")["EnableNetworkIsolation"] is False
    before = listener.accepted
    assert probe(server, "alpha", listener)["connect"] == "ok"
    assert listener.accepted == before + 1
    isolated = probe(server, "isolated", listener)
    assert isolated["connect"] == "OSError"
    assert listener.accepted == before + 1
    # Served all the same: the gateway reaches it on its Unix socket.
    assert len(isolated["prediction"]) == 1


@needs_root
def test_cache_and_data_dir_permissions(server: ColdbrewServer, endpoints: dict[str, str]) -> None:
    data = server.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("coldbrew.db", "coldbrew.db-wal", "coldbrew.db-shm"):
        if (data / name).exists():
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((data / "artifacts").stat().st_mode) == 0o700
    gids = set()
    for entry in cache_entries(server):
        assert stat.S_IMODE(entry.stat().st_mode) == 0o750
        gids.add(entry.stat().st_gid)
        for path in entry.rglob("*"):
            mode = stat.S_IMODE(path.lstat().st_mode)
            assert mode & 0o007 == 0, f"{path} is readable by others ({mode:o})"
            assert path.lstat().st_gid == entry.stat().st_gid
    assert len(gids) == 2 and 0 not in gids


def test_model_roots(server: ColdbrewServer, sm: Any, roots: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.tar.gz"
    sklearn_archive(outside, n_estimators=2)
    (roots / "linked").mkdir()
    (roots / "linked" / "model.joblib").symlink_to(tmp_path / "outside.tar.gz")
    cases = {
        "shadow": "file:///etc/shadow",
        "nowhere": "/no/such/directory/model.tar.gz",
        "outside": str(outside),
        "dotdot": f"{roots}/../{outside.parent.name}/outside.tar.gz",
        "via-link-dir": str(roots / "escape.tar.gz"),
    }
    (roots / "escape.tar.gz").symlink_to(outside)
    reasons = {}
    for name, url in cases.items():
        deploy_serverless(sm, f"roots-{name}", url)
    for name, url in cases.items():
        described = wait_for_status(sm, f"roots-{name}", "Failed")
        reasons[name] = described["FailureReason"]
        assert reasons[name].startswith(f"Model data {url} is not under an allowed model root"), reasons[name]
        assert str(tmp_path) not in reasons[name].replace(url, "")
    # Whether the path exists makes no difference to the answer.
    assert reasons["shadow"].replace(cases["shadow"], "") == reasons["nowhere"].replace(cases["nowhere"], "")

    deploy_serverless(sm, "roots-member-link", str(roots / "linked"))
    reason = wait_for_status(sm, "roots-member-link", "Failed")["FailureReason"]
    assert "'model.joblib' is a link to a file outside the allowed model roots" in reason
    assert str(tmp_path) not in reason


@needs_root
def test_a_restricted_source_file_stays_restricted(server: ColdbrewServer, sm: Any, roots: Path) -> None:
    directory = roots / "private-model"
    directory.mkdir()
    _, model = sklearn_archive(roots / "private.tar.gz", n_estimators=5)
    import tarfile

    with tarfile.open(roots / "private.tar.gz") as tar:
        tar.extractall(directory, filter="data")
    (directory / "model.joblib").chmod(0o600)
    before = set(cache_entries(server))
    deploy_serverless(sm, "private", str(directory))
    wait_for_status(sm, "private", "InService", timeout=120)
    (entry,) = set(cache_entries(server)) - before
    copied = entry / "model.joblib"
    assert stat.S_IMODE(copied.stat().st_mode) == 0o640
    assert copied.stat().st_gid == entry.stat().st_gid != 0
    body = (
        server.client("sagemaker-runtime")
        .invoke_endpoint(EndpointName="private", Body=b"0,0,0,0,0,0,0,0,0,0", ContentType="text/csv")["Body"]
        .read()
    )
    assert body
