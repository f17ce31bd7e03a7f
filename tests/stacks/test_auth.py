"""Stacks on a server with auth on: the CloudFormation API checks each key's policy
(``cloudformation:<Action>``, and the SageMaker actions a stack operation takes), and refusals are
query-protocol errors botocore reads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.auth.conftest import AuthServer, create_key

TEMPLATE = """
Parameters:
  DataUrl: {Type: String, Default: s3://models/model.tar.gz}
Resources:
  Model:
    Type: AWS::SageMaker::Model
    Properties:
      PrimaryContainer: {ModelDataUrl: !Ref DataUrl}
Outputs:
  Name: {Value: !GetAtt Model.ModelName}
  Arn: {Value: !Ref Model, Export: {Name: !Sub "${AWS::StackName}-model"}}
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AuthServer, dict[str, dict[str, str]]]]:
    data_dir = tmp_path_factory.mktemp("stack-auth") / "data"
    policy = tmp_path_factory.mktemp("policy") / "stacks-only.json"
    policy.write_text(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "cloudformation:*", "Resource": "*"}],
            }
        )
    )
    made = {
        "admin": create_key(data_dir, "--admin"),
        "read-only": create_key(data_dir, "--read-only"),
        "stacks-only": create_key(data_dir, "--policy", str(policy)),
    }
    server = AuthServer(data_dir, ("--auth", "on")).start()
    yield server, made
    server.stop()


def code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def test_keys_may_do_what_their_policies_allow(keys: tuple[AuthServer, dict[str, dict[str, str]]]) -> None:
    server, made = keys
    admin: Any = server.signed("cloudformation", made["admin"])
    admin.create_stack(StackName="authorized", TemplateBody=TEMPLATE)
    described = admin.describe_stacks(StackName="authorized")["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o for o in described["Outputs"]}
    assert outputs["Name"]["OutputValue"].startswith("Model-")
    assert outputs["Arn"]["OutputValue"] == (
        f"arn:aws:sagemaker:us-east-1:123456789012:model/{outputs['Name']['OutputValue'].lower()}"
    )
    assert outputs["Arn"]["ExportName"] == "authorized-model"
    assert admin.list_exports()["Exports"][0]["Name"] == "authorized-model"

    reader: Any = server.signed("cloudformation", made["read-only"])
    assert reader.describe_stacks(StackName="authorized")["Stacks"][0]["StackName"] == "authorized"
    with pytest.raises(ClientError) as refused:
        reader.delete_stack(StackName="authorized")
    assert code(refused) == "AccessDenied"
    assert "cloudformation:DeleteStack" in refused.value.response["Error"]["Message"]

    # cloudformation:* alone does not make SageMaker resources: a stack acts with its caller's rights.
    stacks_only: Any = server.signed("cloudformation", made["stacks-only"])
    with pytest.raises(ClientError) as refused:
        stacks_only.create_stack(StackName="sneaky", TemplateBody=TEMPLATE)
    assert code(refused) == "AccessDenied" and "sagemaker:" in refused.value.response["Error"]["Message"]
    assert stacks_only.describe_stacks(StackName="authorized")["Stacks"]

    unsigned: Any = server.signed("cloudformation", {"AccessKeyId": "AKIDUNKNOWN", "SecretAccessKey": "x"})
    with pytest.raises(ClientError) as refused:
        unsigned.describe_stacks()
    assert code(refused) == "InvalidClientTokenId"
    admin.delete_stack(StackName="authorized")
    assert (
        admin.describe_stacks(StackName=described["StackId"])["Stacks"][0]["StackStatus"] == "DELETE_COMPLETE"
    )
    assert server.signed("sagemaker", made["admin"]).list_models()["Models"] == []
