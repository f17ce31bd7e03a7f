"""Real parts for tests: a coldbrew server in a subprocess, boto3 clients, model archives."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import psutil
from botocore.config import Config

from coldbrew.worker.messages import SPARE_NAME, TEMPLATE_NAME

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ColdbrewServer:
    """``coldbrew serve`` as a child process on a free loopback port."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        repo: Path = REPO,
        python: str | Path = sys.executable,
    ) -> None:
        self.data_dir = data_dir
        self.env = env or {}
        self.repo = repo
        """The checkout whose coldbrew runs (it is imported from the working directory)."""
        self.python = str(python)
        """The interpreter (so the environment) it runs in: this one unless a test says otherwise."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    def start(self, timeout: float = 30.0) -> ColdbrewServer:
        # Offline: a model's requirements.txt is installed from local wheels only, never an index.
        # Workers keep the server's user unless a test asks otherwise: most tests' models read and
        # write files in the test's tmp_path, which a worker of its own user (the default when the
        # server runs as root) cannot reach. tests/containment runs them as such.
        env = {
            "COLDBREW_WORKER_IDS": "off",
            **os.environ,
            "COLDBREW_LOG_LEVEL": "info",
            "COLDBREW_PIP_ARGS": "--no-index",
            **self.env,
        }
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                self.python,
                "-m",
                "coldbrew",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.repo,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"coldbrew exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/ping", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"coldbrew did not answer /ping within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise RuntimeError(f"coldbrew did not stop within {timeout} s of signal {sig}") from None
        return self.process.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def client(self, service: str = "sagemaker", region: str = "us-east-1", **config: Any) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id="anything",
            aws_secret_access_key="anything",
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, **config),
        )


def wait_for_status(sm: Any, name: str, status: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        described: dict[str, Any] = sm.describe_endpoint(EndpointName=name)
        if described["EndpointStatus"] == status:
            return described
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} is {described['EndpointStatus']}, not {status}: {described}")
        time.sleep(0.05)


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sklearn_archive(path: Path, n_estimators: int = 10) -> tuple[Path, Any]:
    """A model.tar.gz holding a RandomForestRegressor fitted on load_diabetes, and the model."""
    import joblib
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    features, target = load_diabetes(return_X_y=True)
    model = RandomForestRegressor(n_estimators=n_estimators, random_state=0).fit(features, target)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    path.write_bytes(tar_gz({"model.joblib": buffer.getvalue()}))
    return path, model


def deploy_serverless(
    sm: Any,
    name: str,
    model_data_url: str,
    memory: int = 1024,
    max_concurrency: int = 2,
    provisioned: int | None = None,
    environment: dict[str, str] | None = None,
) -> None:
    """Model ``name``, endpoint config ``<name>-config`` and endpoint ``name``.

    The config's name differs from the endpoint's on purpose: code that labels one with the other
    (as serving once did) then shows up in tests.
    """
    container: dict[str, Any] = {"Image": "coldbrew/sklearn", "ModelDataUrl": model_data_url}
    if environment:
        container["Environment"] = environment
    sm.create_model(
        ModelName=name, PrimaryContainer=container, ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew"
    )
    serverless: dict[str, Any] = {"MemorySizeInMB": memory, "MaxConcurrency": max_concurrency}
    if provisioned is not None:
        serverless["ProvisionedConcurrency"] = provisioned
    sm.create_endpoint_config(
        EndpointConfigName=config_name(name),
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name, "ServerlessConfig": serverless}],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config_name(name))


def config_name(endpoint: str) -> str:
    """The endpoint config ``deploy_serverless`` creates for ``endpoint``."""
    return f"{endpoint}-config"


def worker_pids(server: ColdbrewServer) -> set[int]:
    """Worker processes the server runs now: spawned ones, and those forked by the zygote or by a
    model template."""
    assert server.process is not None
    pids = set()
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE or "coldbrew.worker" not in " ".join(child.cmdline()):
                continue
            if child.ppid() == server.process.pid and "coldbrew.worker.zygote" in " ".join(child.cmdline()):
                continue  # the zygote itself
            if child.name() in (TEMPLATE_NAME, SPARE_NAME):
                continue  # a model template or its spare: they serve nothing (coldbrew/worker/template.py)
            pids.add(child.pid)
        except psutil.Error:
            pass
    return pids


def zygote_of(parent: int) -> int:
    """The process a worker whose parent is ``parent`` was forked from at bottom: ``parent``, or the
    zygote that forked it if ``parent`` is a model template (coldbrew/worker/template.py)."""
    try:
        process = psutil.Process(parent)
        return process.ppid() if process.name() == TEMPLATE_NAME else parent
    except psutil.Error:
        return parent
