"""Models, endpoint configs, tags and listing through a real boto3 client."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from tests.support import ColdbrewServer

ROLE = "arn:aws:iam::123456789012:role/coldbrew"


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def make_model(
    sm: Any, name: str, url: str = "file:///nonexistent/model.tar.gz", **extra: Any
) -> dict[str, Any]:
    return sm.create_model(
        ModelName=name, PrimaryContainer={"Image": "img", "ModelDataUrl": url}, ExecutionRoleArn=ROLE, **extra
    )


def serverless_variant(model: str, **config: Any) -> dict[str, Any]:
    return {
        "VariantName": "AllTraffic",
        "ModelName": model,
        "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5, **config},
    }


def test_model_crud_and_arn(sm: Any) -> None:
    arn = make_model(sm, "Crud-Model", Tags=[{"Key": "team", "Value": "ml"}])["ModelArn"]
    assert arn == "arn:aws:sagemaker:us-east-1:123456789012:model/crud-model"
    described = sm.describe_model(ModelName="Crud-Model")
    assert described["ModelName"] == "Crud-Model"
    assert described["PrimaryContainer"] == {
        "Image": "img",
        "ModelDataUrl": "file:///nonexistent/model.tar.gz",
    }
    assert described["ExecutionRoleArn"] == ROLE
    assert isinstance(described["CreationTime"], dt.datetime)
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    sm.delete_model(ModelName="Crud-Model")
    with pytest.raises(ClientError) as excinfo:
        sm.describe_model(ModelName="Crud-Model")
    assert error_of(excinfo) == ("ValidationException", f'Could not find model "{arn}".', 400)


def test_arn_uses_signed_region_and_account(server: ColdbrewServer) -> None:
    sm = server.client(region="eu-west-1")
    arn = make_model(sm, "regional")["ModelArn"]
    assert arn == "arn:aws:sagemaker:eu-west-1:123456789012:model/regional"


def test_duplicates_are_refused(sm: Any) -> None:
    make_model(sm, "dup-model")
    with pytest.raises(ClientError) as excinfo:
        make_model(sm, "dup-model")
    assert error_of(excinfo) == (
        "ValidationException",
        'Cannot create already existing model "arn:aws:sagemaker:us-east-1:123456789012:model/dup-model".',
        400,
    )
    sm.create_endpoint_config(
        EndpointConfigName="dup-config", ProductionVariants=[serverless_variant("dup-model")]
    )
    with pytest.raises(ClientError) as excinfo:
        sm.create_endpoint_config(
            EndpointConfigName="dup-config", ProductionVariants=[serverless_variant("dup-model")]
        )
    assert error_of(excinfo)[1] == (
        "Cannot create already existing endpoint configuration "
        '"arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/dup-config".'
    )


def test_missing_resources_name_their_arn(sm: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        sm.describe_endpoint_config(EndpointConfigName="nope")
    assert error_of(excinfo) == (
        "ValidationException",
        "Could not find endpoint configuration "
        '"arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/nope".',
        400,
    )
    with pytest.raises(ClientError) as excinfo:
        sm.describe_endpoint(EndpointName="nope")
    assert (
        error_of(excinfo)[1]
        == 'Could not find endpoint "arn:aws:sagemaker:us-east-1:123456789012:endpoint/nope".'
    )
    with pytest.raises(ClientError) as excinfo:
        sm.delete_model(ModelName="nope")
    assert error_of(excinfo)[0] == "ValidationException"
    with pytest.raises(ClientError) as excinfo:
        sm.create_endpoint(EndpointName="nope", EndpointConfigName="nope")
    assert "Could not find endpoint configuration" in error_of(excinfo)[1]


@pytest.mark.parametrize(
    "variant, message",
    [
        (serverless_variant("valid-model", MemorySizeInMB=1500), "Member must be one of 1024, 2048"),
        (serverless_variant("valid-model", MemorySizeInMB=8192), "less than or equal to 6144"),
        (serverless_variant("valid-model", MaxConcurrency=201), "less than or equal to 200"),
        (serverless_variant("valid-model", MaxConcurrency=4, ProvisionedConcurrency=5), "must not exceed"),
        ({"VariantName": "v", "ModelName": "valid-model"}, "needs either a ServerlessConfig"),
        ({"VariantName": "v", "ModelName": "valid-model", "InstanceType": "ml.m5.large"}, "needs either"),
        (
            {**serverless_variant("valid-model"), "InstanceType": "ml.m5.large", "InitialInstanceCount": 1},
            "has both ServerlessConfig and InstanceType",
        ),
        (
            serverless_variant("missing-model"),
            'Could not find model "arn:aws:sagemaker:us-east-1:123456789012:model/missing-model"',
        ),
        (
            {
                "VariantName": "v",
                "ModelName": "valid-model",
                "InstanceType": "ml.nope",
                "InitialInstanceCount": 1,
            },
            "Member must satisfy enum value set",
        ),
    ],
)
def test_endpoint_config_validation(sm: Any, variant: dict[str, Any], message: str) -> None:
    try:
        make_model(sm, "valid-model")
    except ClientError:
        pass
    with pytest.raises(ClientError) as excinfo:
        sm.create_endpoint_config(EndpointConfigName="invalid-config", ProductionVariants=[variant])
    code, text, status = error_of(excinfo)
    assert (code, status) == ("ValidationException", 400)
    assert message in text
    # A refused request leaves nothing behind.
    with pytest.raises(ClientError):
        sm.describe_endpoint_config(EndpointConfigName="invalid-config")


def test_provisioned_config_round_trips(sm: Any) -> None:
    make_model(sm, "prov-model")
    variants = [
        {
            "VariantName": "Blue",
            "ModelName": "prov-model",
            "InstanceType": "ml.m5.large",
            "InitialInstanceCount": 2,
            "InitialVariantWeight": 0.5,
        }
    ]
    sm.create_endpoint_config(EndpointConfigName="prov-config", ProductionVariants=variants)
    described = sm.describe_endpoint_config(EndpointConfigName="prov-config")
    assert described["ProductionVariants"] == variants
    assert described["EndpointConfigArn"].endswith(":endpoint-config/prov-config")


def test_names_follow_sagemaker_pattern(sm: Any) -> None:
    for bad in ("under_score", "-leading", "a" * 64, "trailing-"):
        with pytest.raises((ClientError, ParamValidationError)) as excinfo:
            make_model(sm, bad)
        if isinstance(excinfo.value, ClientError):
            assert error_of(excinfo)[0] == "ValidationException"
            assert "modelName" in error_of(excinfo)[1]


def test_botocore_validation_is_applied_server_side(server: ColdbrewServer) -> None:
    # A client that skips its own validation still gets the server's.
    sm = server.client(parameter_validation=False)
    with pytest.raises(ClientError) as excinfo:
        sm.create_model(ModelName="no-container")
    assert error_of(excinfo)[0] == "ValidationException"
    with pytest.raises(ClientError) as excinfo:
        sm.create_endpoint_config(EndpointConfigName="x", ProductionVariants=[{"ModelName": "m"}])
    code, message, status = error_of(excinfo)
    assert (code, status) == ("ValidationException", 400)
    assert message == (
        "1 validation error detected: Value null at 'productionVariants.1.member.variantName' "
        "failed to satisfy constraint: Member must not be null"
    )


def test_constraint_violations_use_the_aws_wire_format(server: ColdbrewServer) -> None:
    # As SageMaker answers, not botocore's client-side wording: lower camel case member paths,
    # list items as .N.member counted from 1, every violation counted and joined with "; ".
    sm = server.client(parameter_validation=False)
    serverless = {"MemorySizeInMB": 512, "MaxConcurrency": 2}
    with pytest.raises(ClientError) as excinfo:
        sm.create_endpoint_config(
            EndpointConfigName="wire",
            ProductionVariants=[{"VariantName": "v", "ModelName": "m", "ServerlessConfig": serverless}],
        )
    assert error_of(excinfo)[:2] == (
        "ValidationException",
        "1 validation error detected: Value '512' at "
        "'productionVariants.1.member.serverlessConfig.memorySizeInMB' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1024",
    )
    with pytest.raises(ClientError) as excinfo:
        sm.create_endpoint_config(
            EndpointConfigName="wire",
            ProductionVariants=[
                {
                    "VariantName": "ok",
                    "ModelName": "m",
                    "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 1},
                },
                {
                    "VariantName": "v_2",
                    "ModelName": "m",
                    "ServerlessConfig": {"MemorySizeInMB": 9999, "MaxConcurrency": 0},
                },
            ],
        )
    message = error_of(excinfo)[1]
    assert message.startswith("3 validation errors detected: ")
    assert message.split(": ", 1)[1].split("; ") == [
        "Value 'v_2' at 'productionVariants.2.member.variantName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
        "Value '9999' at 'productionVariants.2.member.serverlessConfig.memorySizeInMB' failed to satisfy "
        "constraint: Member must have value less than or equal to 6144",
        "Value '0' at 'productionVariants.2.member.serverlessConfig.maxConcurrency' failed to satisfy "
        "constraint: Member must have value greater than or equal to 1",
    ]
    # A huge value is not echoed whole.
    with pytest.raises(ClientError) as excinfo:
        sm.create_model(ModelName="m" * 100_000, PrimaryContainer={"Image": "coldbrew/sklearn"})
    assert len(error_of(excinfo)[1]) < 500


def test_list_paging_sorting_and_filters(sm: Any) -> None:
    names = [f"page-model-{i:02d}" for i in range(23)]
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    for name in names:
        make_model(sm, name)
    seen: list[str] = []
    token: dict[str, str] = {}
    pages = 0
    while True:
        page = sm.list_models(
            NameContains="PAGE-model", SortBy="Name", SortOrder="Ascending", MaxResults=10, **token
        )
        pages += 1
        seen += [m["ModelName"] for m in page["Models"]]
        if "NextToken" not in page:
            break
        token = {"NextToken": page["NextToken"]}
    assert seen == names
    assert pages == 3
    paginator = sm.get_paginator("list_models")
    newest_first = [
        m["ModelName"] for p in paginator.paginate(NameContains="page-model") for m in p["Models"]
    ]
    assert newest_first == list(reversed(names))
    after = sm.list_models(NameContains="page-model", CreationTimeAfter=before, MaxResults=100)["Models"]
    assert len(after) == 23
    none = sm.list_models(NameContains="page-model", CreationTimeBefore=before, MaxResults=100)["Models"]
    assert none == []
    with pytest.raises(ClientError) as excinfo:
        sm.list_models(NextToken="garbage!")
    assert error_of(excinfo)[0] == "ValidationException"


def test_tags(sm: Any) -> None:
    arn = make_model(sm, "tagged")["ModelArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "a", "Value": "one"}])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "a", "Value": "one"}, {"Key": "b", "Value": "2"}]
    sm.delete_tags(ResourceArn=arn, TagKeys=["a"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "b", "Value": "2"}]
    with pytest.raises(ClientError) as excinfo:
        sm.add_tags(ResourceArn=arn, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)])
    assert error_of(excinfo)[0] == "ResourceLimitExceeded"
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "b", "Value": "2"}]
    with pytest.raises(ClientError) as excinfo:
        sm.list_tags(ResourceArn="arn:aws:sagemaker:us-east-1:123456789012:model/never-made")
    assert error_of(excinfo)[0] == "ValidationException"


def test_model_data_url_is_checked_at_create_model(sm: Any, tmp_path: Path) -> None:
    # SageMaker's pattern (s3:// or https://), widened by coldbrew to local absolute paths.
    for good in ("s3://bucket/model.tar.gz", "https://example.com/m.tar.gz", f"file://{tmp_path}/m.tar.gz"):
        sm.create_model(ModelName=f"url-ok-{abs(hash(good)) % 1000}", PrimaryContainer={"ModelDataUrl": good})
    for bad in ("bucket/model.tar.gz", "ftp://host/m.tar.gz", "s3:/bucket"):
        with pytest.raises(ClientError) as excinfo:
            sm.create_model(ModelName="url-bad", PrimaryContainer={"ModelDataUrl": bad})
        code, message, _ = error_of(excinfo)
        assert code == "ValidationException"
        assert message == (
            f"1 validation error detected: Value '{bad}' at 'primaryContainer.modelDataUrl' failed to "
            "satisfy constraint: Member must satisfy regular expression pattern: (https|s3)://([^/]+)/?(.*)"
        )
