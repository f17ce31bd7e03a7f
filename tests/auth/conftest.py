"""A coldbrew server with auth on, its access keys (made with ``coldbrew keys create``), and boto3
clients signing with them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

from tests.support import REPO, ColdbrewServer


def keys(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coldbrew", "keys", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip


def create_key(data_dir: Path, *what: str) -> dict[str, str]:
    done = keys(data_dir, "create", *what, "--json")
    assert done.returncode == 0, done.stderr
    created: dict[str, str] = json.loads(done.stdout)
    return created


class AuthServer(ColdbrewServer):
    """``coldbrew serve`` with extra flags, over HTTP or HTTPS (``ca``: the certificate to trust)."""

    def __init__(
        self,
        data_dir: Path,
        flags: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        ca: Path | None = None,
    ) -> None:
        super().__init__(data_dir, env)
        self.flags, self.ca = flags, ca
        if ca is not None:
            self.url = f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> AuthServer:
        env = {**os.environ, "COLDBREW_LOG_LEVEL": "info", "COLDBREW_PIP_ARGS": "--no-index", **self.env}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "coldbrew", "serve", "--port", str(self.port),
                 "--data-dir", str(self.data_dir), *self.flags],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.repo,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        verify: Any = str(self.ca) if self.ca is not None else True
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"coldbrew exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/ping", timeout=1, verify=verify).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"coldbrew did not answer /ping within {timeout} s:\n{self.log()}")

    def signed(self, service: str, key: dict[str, str], region: str = "us-east-1", **config: Any) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            verify=str(self.ca) if self.ca is not None else None,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, **config),
        )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth") / "data"


@pytest.fixture(scope="module")
def admin(data_dir: Path) -> dict[str, str]:
    return create_key(data_dir, "--admin", "--description", "tests' admin")


@pytest.fixture(scope="module")
def auth_server(data_dir: Path, admin: dict[str, str]) -> Iterator[AuthServer]:
    """Auth turned on on loopback (as a non-loopback bind turns it on)."""
    server = AuthServer(data_dir, ("--auth", "on")).start()
    yield server
    server.stop()
