"""The AWS CLI (v1, from PyPI: the ``awscli`` test dependency) against the real server, as the
README tells a newcomer to run it: dummy credentials, a region, ``--endpoint-url``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import ColdbrewServer


@pytest.fixture
def aws(server: ColdbrewServer, tmp_path: Path) -> Any:
    env = {
        "AWS_ACCESS_KEY_ID": "any",
        "AWS_SECRET_ACCESS_KEY": "any",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "PATH": "/usr/bin:/bin",
    }

    def run(*args: str, check: bool = True, config: str = "") -> subprocess.CompletedProcess[str]:
        (tmp_path / "config").write_text(config)
        env["AWS_CONFIG_FILE"] = str(tmp_path / "config")
        done = subprocess.run(
            [sys.executable, "-m", "awscli", *args, "--endpoint-url", server.url, "--output", "json"],
            env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, done.stderr
        return done

    return run


def test_deploy_wait_invoke_and_delete_with_the_aws_cli(
    aws: Any, model_archive: tuple[Path, Any], tmp_path: Path
) -> None:
    archive, model = model_archive
    container = {"Image": "coldbrew/sklearn", "ModelDataUrl": archive.as_uri()}
    role = "arn:aws:iam::123456789012:role/x"
    aws("sagemaker", "create-model", "--model-name", "cli-rf", "--execution-role-arn", role,
        "--primary-container", json.dumps(container))  # fmt: skip
    variant = {"VariantName": "AllTraffic", "ModelName": "cli-rf",
               "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 2}}  # fmt: skip
    aws("sagemaker", "create-endpoint-config", "--endpoint-config-name", "cli-rf-config",
        "--production-variants", json.dumps([variant]))  # fmt: skip
    created = json.loads(
        aws(
            "sagemaker",
            "create-endpoint",
            "--endpoint-name",
            "cli-rf",
            "--endpoint-config-name",
            "cli-rf-config",
        ).stdout
    )
    assert created["EndpointArn"] == "arn:aws:sagemaker:us-east-1:123456789012:endpoint/cli-rf"
    # The CLI's waiter is botocore's endpoint_in_service (30 s between polls): the first poll,
    # right away, finds the endpoint already in service.
    aws("sagemaker", "wait", "endpoint-in-service", "--endpoint-name", "cli-rf")
    described = json.loads(aws("sagemaker", "describe-endpoint", "--endpoint-name", "cli-rf").stdout)
    assert described["EndpointStatus"] == "InService"

    rows = np.zeros((2, 10))
    (tmp_path / "rows.json").write_text(json.dumps(rows.tolist()))
    done = aws("sagemaker-runtime", "invoke-endpoint", "--endpoint-name", "cli-rf", "--body", "fileb://rows.json",
               "--content-type", "application/json", "out.json")  # fmt: skip
    reply = json.loads(done.stdout)
    assert reply["ContentType"] == "application/json"
    assert reply["InvokedProductionVariant"] == "AllTraffic"
    np.testing.assert_allclose(json.loads((tmp_path / "out.json").read_text()), model.predict(rows))

    aws("sagemaker", "delete-endpoint", "--endpoint-name", "cli-rf")
    aws("sagemaker", "wait", "endpoint-deleted", "--endpoint-name", "cli-rf")
    aws("sagemaker", "delete-endpoint-config", "--endpoint-config-name", "cli-rf-config")
    aws("sagemaker", "delete-model", "--model-name", "cli-rf")
    listed = json.loads(aws("sagemaker", "list-endpoints").stdout)
    assert "cli-rf" not in [e["EndpointName"] for e in listed["Endpoints"]]


def test_aws_cli_errors_are_sagemakers(aws: Any) -> None:
    missing = aws("sagemaker-runtime", "invoke-endpoint", "--endpoint-name", "nowhere", "--body", "1",
                  "out.bin", check=False)  # fmt: skip
    assert missing.returncode != 0
    assert "An error occurred (ValidationError) when calling the InvokeEndpoint operation: " in missing.stderr
    assert "Endpoint nowhere of account 123456789012 not found." in missing.stderr

    # The CLI checks ranges itself before sending; with that turned off (botocore's
    # parameter_validation setting) the server's answer is SageMaker's wire-format wording.
    variant = {"VariantName": "AllTraffic", "ModelName": "m",
               "ServerlessConfig": {"MemorySizeInMB": 512, "MaxConcurrency": 1}}  # fmt: skip
    bad = aws("sagemaker", "create-endpoint-config", "--endpoint-config-name", "cli-bad",
              "--production-variants", json.dumps([variant]),
              check=False, config="[default]\nparameter_validation = false\n")  # fmt: skip
    assert bad.returncode != 0, bad.stderr
    assert (
        "1 validation error detected: Value '512' at "
        "'productionVariants.1.member.serverlessConfig.memorySizeInMB' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1024"
    ) in bad.stderr
