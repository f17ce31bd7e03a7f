"""Quotas (issue 14, point 4): how many resources the control plane holds, and how many instances
a provisioned variant may ask for; ResourceLimitExceeded naming the setting to raise."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from coldbrew.control import arns
from coldbrew.control.quotas import Quotas
from coldbrew.control.store import Store
from coldbrew.errors import ResourceLimitExceeded
from tests.support import ColdbrewServer

LIMITS = {
    "COLDBREW_MAX_MODELS": "3",
    "COLDBREW_MAX_ENDPOINT_CONFIGS": "2",
    "COLDBREW_MAX_ENDPOINTS": "1",
    "COLDBREW_MAX_INSTANCES_PER_VARIANT": "2",
}
SERVERLESS = {"MemorySizeInMB": 1024, "MaxConcurrency": 1}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdbrewServer]:
    server = ColdbrewServer(tmp_path_factory.mktemp("limited") / "data", env=LIMITS).start()
    yield server
    server.stop()


def _refusal(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    error = excinfo.value.response["Error"]
    return error["Code"], error["Message"]


def test_models_past_the_quota_are_refused_naming_the_setting(limited: ColdbrewServer) -> None:
    sm = limited.client("sagemaker")
    for index in range(3):
        sm.create_model(ModelName=f"quota-{index}", PrimaryContainer={"Image": "x"})
    with pytest.raises(ClientError) as excinfo:
        sm.create_model(ModelName="quota-3", PrimaryContainer={"Image": "x"})
    code, message = _refusal(excinfo)
    assert code == "ResourceLimitExceeded"
    assert "'Number of models' is 3 Models" in message and "COLDBREW_MAX_MODELS" in message
    # Deleting one makes room again.
    sm.delete_model(ModelName="quota-0")
    sm.create_model(ModelName="quota-3", PrimaryContainer={"Image": "x"})


def test_endpoint_configs_and_endpoints_past_their_quotas_are_refused(limited: ColdbrewServer) -> None:
    sm = limited.client("sagemaker")
    variant = {"VariantName": "v", "ModelName": "quota-1", "ServerlessConfig": SERVERLESS}
    for name in ("quota-a", "quota-b"):
        sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    with pytest.raises(ClientError) as excinfo:
        sm.create_endpoint_config(EndpointConfigName="quota-c", ProductionVariants=[variant])
    code, message = _refusal(excinfo)
    assert code == "ResourceLimitExceeded" and "COLDBREW_MAX_ENDPOINT_CONFIGS" in message
    # The model behind it has no data, so the endpoint fails to deploy; it still counts.
    sm.create_endpoint(EndpointName="quota-ep", EndpointConfigName="quota-a")
    with pytest.raises(ClientError) as excinfo:
        sm.create_endpoint(EndpointName="quota-ep2", EndpointConfigName="quota-b")
    code, message = _refusal(excinfo)
    assert code == "ResourceLimitExceeded" and "COLDBREW_MAX_ENDPOINTS" in message
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["quota-ep"]


def test_instance_counts_past_the_setting_are_refused(limited: ColdbrewServer) -> None:
    sm = limited.client("sagemaker")
    variant = {"VariantName": "v", "ModelName": "quota-1", "InstanceType": "ml.m5.large"}
    for count in (3, 1_000_000):
        with pytest.raises(ClientError) as excinfo:
            sm.create_endpoint_config(
                EndpointConfigName="quota-big",
                ProductionVariants=[{**variant, "InitialInstanceCount": count}],
            )
        code, message = _refusal(excinfo)
        assert code == "ResourceLimitExceeded"
        assert (
            f"{count:,} instances of ml.m5.large" in message
            and "COLDBREW_MAX_INSTANCES_PER_VARIANT" in message
        )


def test_absurd_instance_counts_are_refused_by_what_the_machine_holds(
    server: ColdbrewServer, sm: Any
) -> None:
    # No setting: the bound is how many instances of the type this machine's memory holds.
    sm.create_model(ModelName="instances", PrimaryContainer={"Image": "x"})
    variant = {"VariantName": "v", "ModelName": "instances", "InstanceType": "ml.m5.large"}
    with pytest.raises(ClientError) as excinfo:
        sm.create_endpoint_config(
            EndpointConfigName="instances",
            ProductionVariants=[{**variant, "InitialInstanceCount": 1_000_000}],
        )
    code, message = _refusal(excinfo)
    assert code == "ResourceLimitExceeded"
    assert "this machine's" in message and "MB of memory holds" in message
    # One instance is always allowed (the memory budget decides at deploy time whether it fits).
    sm.create_endpoint_config(
        EndpointConfigName="instances", ProductionVariants=[{**variant, "InitialInstanceCount": 1}]
    )


def test_only_transform_jobs_in_progress_count_against_their_quota(tmp_path: Path) -> None:
    # Transform jobs are never deleted (SageMaker keeps them), so finished ones must not count.
    store = Store(tmp_path / "coldbrew.db")
    quotas = Quotas(transform_jobs=2)

    def job(name: str, status: str) -> None:
        with store.transaction() as conn:
            conn.execute(
                "INSERT INTO transform_jobs (name_key, name, arn, created_at, modified_at, status, spec, "
                "model_name, instance_type, instance_count) "
                "VALUES (?, ?, ?, ?, ?, ?, '{}', 'm', 'ml.m5.large', 1)",
                [name, name, f"arn:{name}", time.time(), time.time(), status],
            )

    for index in range(5):
        job(f"done-{index}", "Completed")
    job("running", "InProgress")
    with store.transaction() as conn:
        quotas.check_create(conn, arns.TRANSFORM_JOB)
    job("stopping", "Stopping")
    with pytest.raises(ResourceLimitExceeded) as excinfo, store.transaction() as conn:
        quotas.check_create(conn, arns.TRANSFORM_JOB)
    assert "'Number of concurrent transform jobs' is 2" in excinfo.value.message
    assert "COLDBREW_MAX_TRANSFORM_JOBS" in excinfo.value.message
    store.close()
