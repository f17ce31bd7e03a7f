"""Stacks on a real server on loopback: the seed's MLOps template deployed unchanged as staging
(serverless) and as prod (instances, DataCaptureConfig) through ``coldbrew deploy-stack`` and
through the AWS CLI v2's ``aws cloudformation deploy``; an update under invocations with no
failure; rollbacks of a create and of an update whose model does not load; delete-stack removing
everything; and a create a SIGKILL interrupted, rolled back at the next start."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, ColdbrewServer, tar_gz

SEED = REPO / "examples" / "mlops-endpoint-template.yml"
ROW = "0.03,0.05,0.06,0.02,-0.04,-0.03,-0.04,-0.002,0.02,-0.01"


def parameters(project: str, stage: str, model_data_url: str, **extra: str) -> dict[str, str]:
    """The seed template's parameters for one stage, as the MLOps project's staging-config.json
    and prod-config.json give them (ModelDataUrl in place of the registry's ModelPackageName)."""
    return {
        "SageMakerProjectName": project,
        "ModelExecutionRoleArn": "arn:aws:iam::123456789012:role/coldbrew",
        "ModelDataUrl": model_data_url,
        "StageName": stage,
        "EndpointInstanceCount": "1",
        "EndpointInstanceType": "ml.t2.medium",
        "DataCaptureUploadPath": f"s3://capture/{project}",
        "SamplingPercentage": "100",
        **extra,
    }


def coldbrew(server: ColdbrewServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLDBREW_URL": server.url, "COLUMNS": "200"}
    env.update(AWS_ACCESS_KEY_ID="any", AWS_SECRET_ACCESS_KEY="any", AWS_DEFAULT_REGION="us-east-1")
    return subprocess.run(
        [sys.executable, "-m", "coldbrew", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def deploy_stack(server: ColdbrewServer, name: str, values: dict[str, str], template: Path = SEED) -> Any:
    args = ["deploy-stack", str(template), "--stack-name", name]
    for key, value in values.items():
        args += ["--parameter", f"{key}={value}"]
    return coldbrew(server, *args)


def aws(cli: str, server: ColdbrewServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "any",
        "AWS_SECRET_ACCESS_KEY": "any",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_PAGER": "",
    }
    return subprocess.run(
        [cli, "--endpoint-url", server.url, "--no-cli-pager", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def stack(server: ColdbrewServer, name: str) -> dict[str, Any]:
    found: dict[str, Any] = server.client("cloudformation").describe_stacks(StackName=name)["Stacks"][0]
    return found


def events(server: ColdbrewServer, name: str) -> list[dict[str, Any]]:
    cf = server.client("cloudformation")
    pages = cf.get_paginator("describe_stack_events").paginate(StackName=name)
    return [e for page in pages for e in page["StackEvents"]]


def sagemaker_names(sm: Any) -> tuple[list[str], list[str], list[str]]:
    return (
        sorted(m["ModelName"] for m in sm.list_models()["Models"]),
        sorted(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]),
        sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]),
    )


def invoke(server: ColdbrewServer, endpoint: str) -> bytes:
    body: bytes = (
        server.client("sagemaker-runtime")
        .invoke_endpoint(EndpointName=endpoint, ContentType="text/csv", Body=ROW)["Body"]
        .read()
    )
    return body


def assert_staging(sm: Any, endpoint: str, memory: int = 2048) -> dict[str, Any]:
    described: dict[str, Any] = sm.describe_endpoint(EndpointName=endpoint)
    assert described["EndpointStatus"] == "InService"
    variant = described["ProductionVariants"][0]
    assert variant["CurrentServerlessConfig"] == {"MemorySizeInMB": memory, "MaxConcurrency": 20}
    config = sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    assert "DataCaptureConfig" not in config
    assert described["EndpointConfigName"].startswith("EndpointConfig-")
    return described


def assert_prod(sm: Any, endpoint: str) -> None:
    described = sm.describe_endpoint(EndpointName=endpoint)
    assert described["EndpointStatus"] == "InService"
    variant = described["ProductionVariants"][0]
    assert "CurrentServerlessConfig" not in variant and variant["CurrentInstanceCount"] == 1
    config = sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.t2.medium"
    assert config["DataCaptureConfig"] == {
        "EnableCapture": True,
        "InitialSamplingPercentage": 100,
        "DestinationS3Uri": "s3://capture/rf" if endpoint.startswith("rf-") else "s3://capture/aw",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    }


@pytest.fixture(scope="module")
def bad_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "model.tar.gz"
    path.write_bytes(tar_gz({"model.joblib": b"this is not a pickle"}))
    return path


def test_both_stages_through_coldbrew_deploy_stack(
    server: ColdbrewServer, model_archive: tuple[Path, Any]
) -> None:
    sm = server.client("sagemaker")
    url = str(model_archive[0])
    staging = deploy_stack(server, "rf-staging", parameters("rf", "staging", url))
    assert staging.returncode == 0, staging.stdout + staging.stderr
    assert "stack rf-staging: CREATE_COMPLETE" in staging.stdout
    assert "AWS::SageMaker::EndpointConfig" in staging.stdout  # the events, as they came
    prod = deploy_stack(server, "rf-prod", parameters("rf", "prod", url))
    assert prod.returncode == 0, prod.stdout + prod.stderr
    described = assert_staging(sm, "rf-staging")
    assert_prod(sm, "rf-prod")
    assert invoke(server, "rf-staging") == invoke(server, "rf-prod")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack(server, "rf-staging")["Outputs"]}
    assert outputs == {"EndpointName": "rf-staging", "EndpointConfigName": described["EndpointConfigName"]}

    again = deploy_stack(server, "rf-staging", {})  # nothing changed: the previous values are kept
    assert again.returncode == 0 and "No changes to deploy" in again.stdout, again.stdout + again.stderr
    shown = coldbrew(server, "describe-stack", "rf-prod")
    assert shown.returncode == 0 and "CREATE_COMPLETE" in shown.stdout and "rf-prod" in shown.stdout

    for name in ("rf-staging", "rf-prod"):
        deleted = coldbrew(server, "delete-stack", name)
        assert deleted.returncode == 0 and f"stack {name}: DELETE_COMPLETE" in deleted.stdout, deleted.stderr
    assert sagemaker_names(sm) == ([], [], [])
    missing = coldbrew(server, "describe-stack", "rf-prod")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_both_stages_through_aws_cloudformation_deploy(
    aws_v2: str, server: ColdbrewServer, model_archive: tuple[Path, Any]
) -> None:
    sm = server.client("sagemaker")
    for stage in ("staging", "prod"):
        values = parameters("aw", stage, str(model_archive[0]))
        deployed = aws(
            aws_v2,
            server,
            "cloudformation",
            "deploy",
            "--template-file",
            str(SEED),
            "--stack-name",
            f"aw-{stage}",
            "--parameter-overrides",
            *[f"{k}={v}" for k, v in values.items()],
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert f"Successfully created/updated stack - aw-{stage}" in deployed.stdout
    assert_staging(sm, "aw-staging")
    assert_prod(sm, "aw-prod")
    assert invoke(server, "aw-prod")

    # An update through the CLI: a parameter changed, the others kept (UsePreviousValue).
    updated = aws(
        aws_v2,
        server,
        "cloudformation",
        "deploy",
        "--template-file",
        str(SEED),
        "--stack-name",
        "aw-staging",
        "--parameter-overrides",
        "MemorySizeInMB=1024",
    )
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert_staging(sm, "aw-staging", memory=1024)
    unchanged = aws(
        aws_v2, server, "cloudformation", "deploy", "--template-file", str(SEED), "--stack-name", "aw-staging"
    )
    assert unchanged.returncode == 0 and "No changes to deploy" in unchanged.stdout, unchanged.stdout

    described = aws(aws_v2, server, "cloudformation", "describe-stacks", "--stack-name", "aw-staging")
    assert described.returncode == 0 and '"StackStatus": "UPDATE_COMPLETE"' in described.stdout
    listed = aws(aws_v2, server, "cloudformation", "describe-stack-events", "--stack-name", "aw-prod")
    assert listed.returncode == 0 and '"ResourceStatus": "CREATE_COMPLETE"' in listed.stdout
    for stage in ("staging", "prod"):
        assert (
            aws(aws_v2, server, "cloudformation", "delete-stack", "--stack-name", f"aw-{stage}").returncode
            == 0
        )
        waited = aws(
            aws_v2, server, "cloudformation", "wait", "stack-delete-complete", "--stack-name", f"aw-{stage}"
        )
        assert waited.returncode == 0, waited.stderr
    assert sagemaker_names(sm) == ([], [], [])


def test_an_update_under_invocations_fails_none(
    server: ColdbrewServer, model_archive: tuple[Path, Any]
) -> None:
    sm = server.client("sagemaker")
    created = deploy_stack(server, "up-staging", parameters("up", "staging", str(model_archive[0])))
    assert created.returncode == 0, created.stdout + created.stderr
    before = sm.describe_endpoint(EndpointName="up-staging")["EndpointConfigName"]
    results: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        runtime = server.client("sagemaker-runtime")
        while not stop.is_set():
            try:
                runtime.invoke_endpoint(EndpointName="up-staging", ContentType="text/csv", Body=ROW)
                results.append("ok")
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                results.append(repr(exc))

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        while not results:  # traffic flows before the update starts
            stop.wait(0.01)
        updated = deploy_stack(server, "up-staging", {"MemorySizeInMB": "3072"})
        during = len(results)
    finally:
        stop.set()
        thread.join()
    assert updated.returncode == 0, updated.stdout + updated.stderr
    failures = [r for r in results if r != "ok"]
    assert failures == [] and during > 1
    after = assert_staging(sm, "up-staging", memory=3072)
    assert after["EndpointConfigName"] != before
    statuses = [(e["LogicalResourceId"], e["ResourceStatus"]) for e in reversed(events(server, "up-staging"))]
    replaced = statuses.index(("EndpointConfig", "UPDATE_COMPLETE"))
    endpoint_done = statuses.index(("Endpoint", "UPDATE_COMPLETE"))
    old_deleted = statuses.index(("EndpointConfig", "DELETE_COMPLETE"))
    assert replaced < endpoint_done < old_deleted  # the old config goes only once the endpoint moved
    configs = sagemaker_names(sm)[1]
    assert before not in configs and after["EndpointConfigName"] in configs
    assert coldbrew(server, "delete-stack", "up-staging").returncode == 0


def test_a_model_that_does_not_load_rolls_back(
    server: ColdbrewServer, model_archive: tuple[Path, Any], bad_archive: Path
) -> None:
    sm = server.client("sagemaker")
    failed = deploy_stack(server, "bad-staging", parameters("bad", "staging", str(bad_archive)))
    assert failed.returncode == 1 and "ROLLBACK_COMPLETE" in failed.stdout, failed.stdout + failed.stderr
    described = stack(server, "bad-staging")
    assert described["StackStatus"] == "ROLLBACK_COMPLETE"
    history = events(server, "bad-staging")
    endpoint_failed = next(e for e in history if e["ResourceStatus"] == "CREATE_FAILED")
    assert endpoint_failed["LogicalResourceId"] == "Endpoint"
    assert "model.joblib" in endpoint_failed["ResourceStatusReason"]  # the loader's own error
    rollback = next(e for e in history if e["ResourceStatus"] == "ROLLBACK_IN_PROGRESS")
    assert rollback["ResourceStatusReason"] == (
        "The following resource(s) failed to create: [Endpoint]. Rollback requested by user."
    )
    assert "bad-staging" not in sagemaker_names(sm)[2] and not sagemaker_names(sm)[0]
    refused = deploy_stack(server, "bad-staging", {})
    assert refused.returncode == 1 and "delete-stack bad-staging" in refused.stderr
    assert coldbrew(server, "delete-stack", "bad-staging").returncode == 0

    # An update to a model that does not load: rolled back, the endpoint serving all along.
    good = parameters("bad", "staging", str(model_archive[0]))
    assert deploy_stack(server, "bad-staging", good).returncode == 0
    serving = sm.describe_endpoint(EndpointName="bad-staging")["EndpointConfigName"]
    resources_before = sagemaker_names(sm)
    update = deploy_stack(server, "bad-staging", {"ModelDataUrl": str(bad_archive)})
    assert update.returncode == 1 and "UPDATE_ROLLBACK_COMPLETE" in update.stdout, (
        update.stdout + update.stderr
    )
    assert stack(server, "bad-staging")["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE"
    reasons = [e.get("ResourceStatusReason", "") for e in events(server, "bad-staging")]
    assert any("model.joblib" in r for r in reasons)
    assert sm.describe_endpoint(EndpointName="bad-staging")["EndpointConfigName"] == serving
    assert sagemaker_names(sm) == resources_before  # what the update created is gone
    assert invoke(server, "bad-staging")
    parameters_now = {
        p["ParameterKey"]: p["ParameterValue"] for p in stack(server, "bad-staging")["Parameters"]
    }
    assert parameters_now["ModelDataUrl"] == str(model_archive[0])
    assert coldbrew(server, "delete-stack", "bad-staging").returncode == 0
    assert sagemaker_names(sm) == ([], [], [])


def test_template_errors_are_named_by_the_api(server: ColdbrewServer) -> None:
    from botocore.exceptions import ClientError

    cf = server.client("cloudformation")
    body = "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n"
    with pytest.raises(ClientError) as raised:
        cf.create_stack(StackName="nope", TemplateBody=body)
    assert raised.value.response["Error"]["Code"] == "ValidationError"
    assert "Unrecognized resource types: [AWS::SNS::Topic]" in raised.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as raised:
        cf.validate_template(
            TemplateBody=SEED.read_text().replace("!GetAtt Model.ModelName", "!ImportValue m")
        )
    assert "unsupported function: Fn::ImportValue" in raised.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as raised:
        cf.create_stack(StackName="nope", TemplateBody=SEED.read_text())
    assert raised.value.response["Error"]["Message"].startswith("Parameters: [")
    summary = cf.get_template_summary(TemplateBody=SEED.read_text())
    assert summary["ResourceTypes"] == [
        "AWS::SageMaker::Endpoint",
        "AWS::SageMaker::EndpointConfig",
        "AWS::SageMaker::Model",
    ]
    with pytest.raises(ClientError) as raised:
        cf.describe_stacks(StackName="nope")
    assert raised.value.response["Error"]["Message"] == "Stack with id nope does not exist"


# --- a create interrupted by SIGKILL ------------------------------------------------------------

HOLDING_TEMPLATE = textwrap.dedent("""
    Parameters:
      ModelDataUrl: {Type: String}
      HoldFlag: {Type: String}
    Resources:
      Model:
        Type: AWS::SageMaker::Model
        Properties:
          PrimaryContainer:
            ModelDataUrl: !Ref ModelDataUrl
            Environment: {HOLD_FLAG: !Ref HoldFlag}
      Config:
        Type: AWS::SageMaker::EndpointConfig
        Properties:
          ProductionVariants:
            - VariantName: AllTraffic
              ModelName: !GetAtt Model.ModelName
              ServerlessConfig: {MemorySizeInMB: 1024, MaxConcurrency: 2}
      Endpoint:
        Type: AWS::SageMaker::Endpoint
        Properties:
          EndpointName: held
          EndpointConfigName: !GetAtt Config.EndpointConfigName
""")
# Loads only once the flag file is gone: the stack's create waits on the endpoint until then.
HOLDING_INFERENCE = textwrap.dedent("""
    import os
    import time


    def model_fn(model_dir):
        while os.path.exists(os.environ["HOLD_FLAG"]):
            time.sleep(0.05)
        return "held"


    def predict_fn(data, model):
        return [1.0 for _ in range(len(data))]
""")


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ColdbrewServer]:
    srv = ColdbrewServer(tmp_path / "data").start()
    yield srv
    srv.stop()


def test_a_create_killed_midway_is_rolled_back_at_the_next_start(
    own_server: ColdbrewServer, tmp_path: Path
) -> None:
    archive = tmp_path / "held.tar.gz"
    archive.write_bytes(tar_gz({"code/inference.py": HOLDING_INFERENCE.encode()}))
    flag = tmp_path / "hold"
    flag.touch()
    template = tmp_path / "held.yml"
    template.write_text(HOLDING_TEMPLATE)
    cf = own_server.client("cloudformation")

    def create() -> None:
        try:  # its answer is held while the stack runs; the kill cuts it
            cf.create_stack(
                StackName="held",
                TemplateBody=HOLDING_TEMPLATE,
                Parameters=[
                    {"ParameterKey": "ModelDataUrl", "ParameterValue": str(archive)},
                    {"ParameterKey": "HoldFlag", "ParameterValue": str(flag)},
                ],
            )
        except Exception:  # noqa: BLE001
            pass

    thread = threading.Thread(target=create)
    thread.start()
    while not any(
        e["LogicalResourceId"] == "Endpoint"
        and e.get("ResourceStatusReason") == "Resource creation Initiated"
        for e in (events(own_server, "held") if stack_exists(own_server, "held") else [])
    ):
        thread.join(0.05)
    assert stack(own_server, "held")["StackStatus"] == "CREATE_IN_PROGRESS"
    own_server.kill()
    thread.join()
    flag.unlink()
    own_server.start()

    while stack(own_server, "held")["StackStatus"] not in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED"):
        thread.join(0.05)
    described = stack(own_server, "held")
    assert described["StackStatus"] == "ROLLBACK_COMPLETE"
    assert "the server restarted" in described["StackStatusReason"]
    history = events(own_server, "held")
    failed = next(e for e in history if e["ResourceStatus"] == "CREATE_FAILED")
    assert (
        failed["LogicalResourceId"] == "Endpoint" and "the server restarted" in failed["ResourceStatusReason"]
    )
    assert sagemaker_names(own_server.client("sagemaker")) == ([], [], [])


def stack_exists(server: ColdbrewServer, name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        stack(server, name)
    except ClientError:
        return False
    return True


def test_a_change_set_name_is_free_again_once_one_is_executed(
    server: ColdbrewServer, model_archive: tuple[Path, Any]
) -> None:
    """The AWS CLI names its change sets by the second: two deploys of a stack within one second
    reuse a name, which CloudFormation allows once the first was executed."""
    cf, sm = server.client("cloudformation"), server.client("sagemaker")
    body = SEED.read_text()

    def change_set(kind: str, values: dict[str, str]) -> str:
        made = cf.create_change_set(
            StackName="cs-staging", ChangeSetName="same-second", ChangeSetType=kind, TemplateBody=body,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()],
        )  # fmt: skip
        cf.get_waiter("change_set_create_complete").wait(
            ChangeSetName="same-second", StackName="cs-staging", WaiterConfig={"Delay": 1}
        )
        cf.execute_change_set(ChangeSetName="same-second", StackName="cs-staging")
        arn: str = made["Id"]
        return arn

    values = parameters("cs", "staging", str(model_archive[0]))
    first = change_set("CREATE", values)
    cf.get_waiter("stack_create_complete").wait(StackName="cs-staging", WaiterConfig={"Delay": 1})
    second = change_set("UPDATE", {**values, "MemorySizeInMB": "1024"})
    cf.get_waiter("stack_update_complete").wait(StackName="cs-staging", WaiterConfig={"Delay": 1})
    assert first != second
    assert cf.describe_change_set(ChangeSetName=first)["ExecutionStatus"] == "EXECUTE_COMPLETE"
    by_name = cf.describe_change_set(ChangeSetName="same-second", StackName="cs-staging")
    assert by_name["ChangeSetId"] == second  # the name now means the newest
    assert_staging(sm, "cs-staging", memory=1024)
    cf.delete_stack(StackName="cs-staging")
    cf.get_waiter("stack_delete_complete").wait(StackName="cs-staging", WaiterConfig={"Delay": 1})
