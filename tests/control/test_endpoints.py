"""Endpoint lifecycle: Creating -> InService, updates, deletion, failures, waiters and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, WaiterError

from tests.support import ColdbrewServer, config_name, deploy_serverless, tar_gz, wait_for_status

FAST = {"Delay": 0.1, "MaxAttempts": 600}


def test_serverless_endpoint_lifecycle(sm: Any, model_archive: tuple[Path, Any]) -> None:
    archive, _ = model_archive
    deploy_serverless(sm, "life", archive.as_uri(), memory=2048, max_concurrency=3, provisioned=1)
    first = sm.describe_endpoint(EndpointName="life")
    assert first["EndpointStatus"] in ("Creating", "InService")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="life", WaiterConfig=FAST)
    described = sm.describe_endpoint(EndpointName="life")
    assert described["EndpointArn"] == "arn:aws:sagemaker:us-east-1:123456789012:endpoint/life"
    assert described["EndpointConfigName"] == config_name("life")
    [variant] = described["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["CurrentWeight"] == 1.0
    expected = {"MemorySizeInMB": 2048, "MaxConcurrency": 3, "ProvisionedConcurrency": 1}
    assert variant["CurrentServerlessConfig"] == expected
    assert variant["DesiredServerlessConfig"] == expected
    [image] = variant["DeployedImages"]
    assert image["SpecifiedImage"] == image["ResolvedImage"] == "coldbrew/sklearn"
    assert first["CreationTime"] <= image["ResolutionTime"] <= described["LastModifiedTime"]
    assert "FailureReason" not in described

    listed = sm.list_endpoints(StatusEquals="InService", NameContains="life")["Endpoints"]
    assert [e["EndpointName"] for e in listed] == ["life"]

    sm.delete_endpoint(EndpointName="life")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="life", WaiterConfig=FAST)
    with pytest.raises(ClientError):
        sm.describe_endpoint(EndpointName="life")


def test_update_endpoint_switches_config(sm: Any, model_archive: tuple[Path, Any]) -> None:
    archive, _ = model_archive
    deploy_serverless(sm, "upd", archive.as_uri())
    sm.get_waiter("endpoint_in_service").wait(EndpointName="upd", WaiterConfig=FAST)
    sm.create_endpoint_config(
        EndpointConfigName="upd-v2",
        ProductionVariants=[
            {
                "VariantName": "Provisioned",
                "ModelName": "upd",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 2,
            }
        ],
    )
    sm.update_endpoint(EndpointName="upd", EndpointConfigName="upd-v2")
    assert sm.describe_endpoint(EndpointName="upd")["EndpointStatus"] in ("Updating", "InService")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="upd", WaiterConfig=FAST)
    described = sm.describe_endpoint(EndpointName="upd")
    assert described["EndpointConfigName"] == "upd-v2"
    [variant] = described["ProductionVariants"]
    assert (variant["VariantName"], variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (
        "Provisioned",
        2,
        2,
    )
    # Deleting the config an endpoint runs does not disturb it: the endpoint keeps its snapshot.
    sm.delete_endpoint_config(EndpointConfigName="upd-v2")
    sm.delete_model(ModelName="upd")
    assert sm.describe_endpoint(EndpointName="upd")["EndpointStatus"] == "InService"
    sm.delete_endpoint(EndpointName="upd")


def test_update_weights_and_capacities(sm: Any, model_archive: tuple[Path, Any]) -> None:
    archive, _ = model_archive
    deploy_serverless(sm, "weights", archive.as_uri(), max_concurrency=2)
    sm.get_waiter("endpoint_in_service").wait(EndpointName="weights", WaiterConfig=FAST)
    sm.update_endpoint_weights_and_capacities(
        EndpointName="weights",
        DesiredWeightsAndCapacities=[
            {
                "VariantName": "AllTraffic",
                "DesiredWeight": 2.0,
                "ServerlessUpdateConfig": {"MaxConcurrency": 4},
            }
        ],
    )
    sm.get_waiter("endpoint_in_service").wait(EndpointName="weights", WaiterConfig=FAST)
    [variant] = sm.describe_endpoint(EndpointName="weights")["ProductionVariants"]
    assert variant["CurrentWeight"] == 2.0
    assert variant["CurrentServerlessConfig"]["MaxConcurrency"] == 4
    with pytest.raises(ClientError) as excinfo:
        sm.update_endpoint_weights_and_capacities(
            EndpointName="weights",
            DesiredWeightsAndCapacities=[{"VariantName": "Nope", "DesiredWeight": 1.0}],
        )
    assert excinfo.value.response["Error"]["Code"] == "ValidationException"


def test_update_in_progress_is_refused(sm: Any, tmp_path: Path) -> None:
    # A model whose data never arrives keeps the endpoint Creating only briefly, so use a
    # missing file: the endpoint fails, and a Failed endpoint cannot be updated.
    sm.create_model(
        ModelName="broken", PrimaryContainer={"ModelDataUrl": (tmp_path / "missing.tar.gz").as_uri()}
    )
    sm.create_endpoint_config(
        EndpointConfigName="broken",
        ProductionVariants=[
            {
                "VariantName": "v",
                "ModelName": "broken",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName="broken", EndpointConfigName="broken")
    with pytest.raises(WaiterError) as excinfo:
        sm.get_waiter("endpoint_in_service").wait(EndpointName="broken", WaiterConfig=FAST)
    assert "Failed" in str(excinfo.value)
    described = sm.describe_endpoint(EndpointName="broken")
    assert described["EndpointStatus"] == "Failed"
    assert "missing.tar.gz" in described["FailureReason"]
    with pytest.raises(ClientError) as update:
        sm.update_endpoint(EndpointName="broken", EndpointConfigName="broken")
    assert "delete it and create it again" in update.value.response["Error"]["Message"]
    sm.delete_endpoint(EndpointName="broken")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="broken", WaiterConfig=FAST)


@pytest.mark.parametrize(
    "files, reason",
    [
        (None, "not a valid gzip-compressed tar file"),
        ({"../escape.txt": b"x"}, "outside"),
        ({"/etc/evil": b"x"}, "absolute"),
    ],
)
def test_bad_archives_fail_the_endpoint_not_the_server(
    server: ColdbrewServer, sm: Any, tmp_path: Path, files: dict[str, bytes] | None, reason: str
) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"\x1f\x8b this is not gzip" if files is None else tar_gz(files))
    name = f"bad-{abs(hash(reason)) % 10000}"
    deploy_serverless(sm, name, str(archive))
    described = wait_for_status(sm, name, "Failed")
    assert reason in described["FailureReason"].lower()
    assert server.process is not None and server.process.poll() is None


def test_update_to_a_broken_config_rolls_back(
    sm: Any, model_archive: tuple[Path, Any], tmp_path: Path
) -> None:
    archive, _ = model_archive
    deploy_serverless(sm, "rollback", archive.as_uri())
    sm.get_waiter("endpoint_in_service").wait(EndpointName="rollback", WaiterConfig=FAST)
    sm.create_model(
        ModelName="rollback-bad", PrimaryContainer={"ModelDataUrl": str(tmp_path / "gone.tar.gz")}
    )
    sm.create_endpoint_config(
        EndpointConfigName="rollback-bad",
        ProductionVariants=[
            {
                "VariantName": "v",
                "ModelName": "rollback-bad",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    )
    sm.update_endpoint(EndpointName="rollback", EndpointConfigName="rollback-bad")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="rollback", WaiterConfig=FAST)
    described = sm.describe_endpoint(EndpointName="rollback")
    assert described["EndpointConfigName"] == config_name("rollback")
    assert "gone.tar.gz" in described["FailureReason"]
    assert "still serves rollback" in described["FailureReason"]


def test_aws_cli(server: ColdbrewServer, model_archive: tuple[Path, Any], tmp_path: Path) -> None:
    archive, _ = model_archive
    env = {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "PATH": "/usr/bin:/bin",
    }

    def aws(*args: str) -> Any:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "awscli",
                "sagemaker",
                *args,
                "--endpoint-url",
                server.url,
                "--output",
                "json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if result.stdout.strip() else None

    created = aws(
        "create-model",
        "--model-name",
        "cli-model",
        "--primary-container",
        json.dumps({"ModelDataUrl": archive.as_uri()}),
    )
    assert created["ModelArn"] == "arn:aws:sagemaker:us-west-2:123456789012:model/cli-model"
    assert aws("describe-model", "--model-name", "cli-model")["ModelName"] == "cli-model"
    names = [m["ModelName"] for m in aws("list-models", "--name-contains", "cli-")["Models"]]
    assert names == ["cli-model"]
    aws("delete-model", "--model-name", "cli-model")
    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "awscli",
            "sagemaker",
            "describe-model",
            "--model-name",
            "cli-model",
            "--endpoint-url",
            server.url,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert failed.returncode != 0
    assert "Could not find model" in failed.stderr


def test_failure_reason_names_the_users_model_data_not_the_cache(sm: Any, tmp_path: Path) -> None:
    archive = tmp_path / "no-model.tar.gz"
    archive.write_bytes(tar_gz({"README.txt": b"no model here"}))
    deploy_serverless(sm, "no-model-file", archive.as_uri())
    reason = wait_for_status(sm, "no-model-file", "Failed")["FailureReason"]
    assert f"No model file found in {archive.as_uri()}" in reason
    assert "sha256" not in reason and "artifacts" not in reason
