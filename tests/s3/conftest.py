"""The embedded S3 through a real server on loopback, with clients configured as a user would:
only ``AWS_ENDPOINT_URL`` (and dummy credentials) set, nothing S3-specific."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.support import ColdbrewServer


def client_env(server: ColdbrewServer, home: Path) -> dict[str, str]:
    """The environment of a user's shell pointed at ``server``: AWS_ENDPOINT_URL only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=server.url,
        AWS_ACCESS_KEY_ID="any",
        AWS_SECRET_ACCESS_KEY="any",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(home / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdbrewServer]:
    """One server for the package: every test makes its own bucket."""
    srv = ColdbrewServer(tmp_path_factory.mktemp("s3") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="package")
def user_env(server: ColdbrewServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """This process's environment as ``client_env`` for the package's tests (boto3 reads it)."""
    env = client_env(server, tmp_path_factory.mktemp("home"))
    with pytest.MonkeyPatch.context() as patch:
        # AWS_DATA_PATH is the AWS CLI's own (set when awscli is imported), not a user setting.
        for name in [k for k in os.environ if k.startswith("AWS_") and k != "AWS_DATA_PATH"]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        yield env


@pytest.fixture(scope="package")
def s3(user_env: dict[str, str]) -> Any:
    # No endpoint_url: boto3 finds the server through AWS_ENDPOINT_URL, as a user's code would.
    return boto3.client("s3", config=Config(retries={"max_attempts": 1, "mode": "standard"}))


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def error_code(excinfo: pytest.ExceptionInfo[Any]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def status_of(excinfo: pytest.ExceptionInfo[Any]) -> int:
    return int(excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"])


def signed_headers(
    url: str, method: str = "GET", body: bytes = b"", headers: dict[str, str] | None = None
) -> dict[str, str]:
    """SigV4 headers for the s3 service, as botocore signs them (for raw HTTP requests)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    S3SigV4Auth(Credentials("any", "any"), "s3", "us-east-1").add_auth(request)
    return dict(request.headers.items())
