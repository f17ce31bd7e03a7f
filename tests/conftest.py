from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from tests.support import ColdbrewServer, sklearn_archive


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdbrewServer]:
    """One coldbrew server per test module, on a fresh data dir."""
    srv = ColdbrewServer(tmp_path_factory.mktemp("coldbrew") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's standalone server on a loopback port: the stand-in for AWS services coldbrew does
    not serve (SNS) or that a test wants outside coldbrew (an external S3)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def sm(server: ColdbrewServer) -> Any:
    return server.client("sagemaker")


@pytest.fixture(scope="session")
def model_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A scikit-learn model.tar.gz on disk and the fitted model it holds."""
    return sklearn_archive(tmp_path_factory.mktemp("model") / "model.tar.gz")


def aws_cli_v2() -> str | None:
    """An AWS CLI v2 (Debian's ``awscli`` package, which .ci/run installs): PyPI's is v1, which
    has no ``aws logs tail``."""
    for candidate in ("/usr/bin/aws", "/usr/local/bin/aws", shutil.which("aws")):
        if candidate and os.path.exists(candidate):
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=30)
            if (version.stdout + version.stderr).startswith("aws-cli/2."):
                return candidate
    return None


@pytest.fixture(scope="session")
def aws_v2() -> str:
    """The AWS CLI v2's path. Skipped on a developer's machine without one; CI must have it."""
    found = aws_cli_v2()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have the AWS CLI v2 (.ci/run installs Debian's awscli)")
        pytest.skip("no AWS CLI v2 here (apt-get install awscli on Debian 12 installs one)")
    return found
