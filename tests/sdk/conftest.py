"""The SageMaker SDK against a real coldbrew server: client code runs in the SDK's own virtual
environment (:mod:`tests.sdk.environments`), as a user's notebook would, in a subprocess.

Everything the SDK calls is coldbrew on one port, reached with boto3's standard
``AWS_ENDPOINT_URL`` alone: SageMaker, the SageMaker runtime, the embedded S3 (the SDK uploads model
archives and source directories to its default bucket there, and coldbrew downloads them) and
CloudWatch Logs (SDK 3's ``deploy()`` wait reads the endpoint's log group).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from tests.sdk.environments import python_for
from tests.support import ColdbrewServer, tar_gz

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BUCKET = "sdk-tests"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local wheel directory: requirements.txt files install from it, offline."""
    from tests.sdk.wheels import build_wheel

    directory = tmp_path_factory.mktemp("wheels")
    build_wheel(directory, "coldbrew-test-scaler", "1.0", {"coldbrew_test_scaler.py": "FACTOR = 1000.0\n"})
    build_wheel(directory, "coldbrew-test-scaler", "2.0", {"coldbrew_test_scaler.py": "FACTOR = 2000.0\n"})
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Iterator[ColdbrewServer]:
    env = {
        **CREDENTIALS,
        "AWS_CONFIG_FILE": str(tmp_path_factory.mktemp("aws") / "none"),
        "COLDBREW_PIP_ARGS": f"--no-index --find-links {wheelhouse}",
    }
    server = ColdbrewServer(tmp_path_factory.mktemp("sdk") / "data", env=env).start()
    s3_client(server).create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


def s3_client(server: ColdbrewServer) -> Any:
    """boto3 against the server's embedded S3."""
    return boto3.client("s3", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")  # fmt: skip


@dataclass
class SDK:
    """Runs client code with one SDK major against ``server``."""

    major: str
    server: ColdbrewServer
    workdir: Path

    def run(self, code: str, timeout: float = 240.0) -> Any:
        """Run ``code`` (which may use ``URL``, ``BUCKET``, ``ROLE`` and ``emit(value)``) and
        return what it emitted; a failure raises with the client's output and the server log."""
        script = self.workdir / "client.py"
        prelude = (
            "import json, sys\n"
            f"URL, BUCKET, ROLE = {self.server.url!r}, {BUCKET!r}, {ROLE!r}\n"
            "def emit(value):\n"
            # On a line of its own: the SDK's progress dots may not have ended theirs.
            "    print('\\nRESULT ' + json.dumps(value), flush=True)\n"
        )
        script.write_text(prelude + textwrap.dedent(code))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON"))},
            **CREDENTIALS,
            "AWS_CONFIG_FILE": str(self.workdir / "no-aws-config"),
            "AWS_ENDPOINT_URL": self.server.url,
            "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        }
        done = subprocess.run(
            [str(python_for(self.major)), str(script)], cwd=self.workdir, env=env, capture_output=True,
            text=True, timeout=timeout,
        )  # fmt: skip
        results = [line[len("RESULT ") :] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not results:
            raise AssertionError(
                f"SDK {self.major} client failed ({done.returncode}):\n{done.stdout[-4000:]}\n"
                f"{done.stderr[-6000:]}\n--- server log ---\n{self.server.log()[-4000:]}"
            )
        return json.loads(results[-1])


@pytest.fixture
def sdk2(server: ColdbrewServer, tmp_path: Path) -> SDK:
    return SDK("v2", server, tmp_path)


@pytest.fixture
def sdk3(server: ColdbrewServer, tmp_path: Path) -> SDK:
    return SDK("v3", server, tmp_path)


@pytest.fixture(scope="module")
def ridge(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ridge, np.ndarray]:
    """A model.tar.gz of a Ridge regression fitted on load_diabetes, the model, and three rows."""
    X, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(X, y)
    directory = tmp_path_factory.mktemp("ridge")
    joblib.dump(model, directory / "model.joblib")
    archive = directory / "model.tar.gz"
    archive.write_bytes(tar_gz({"model.joblib": (directory / "model.joblib").read_bytes()}))
    return archive, model, X[:3]
