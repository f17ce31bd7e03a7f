"""Hostile and malformed CloudFormation requests get CloudFormation's 4xx errors, never a 5xx."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import httpx
import pytest

from tests.support import ColdbrewServer

# Signed for cloudformation (the router goes by the credential scope; auth is off on loopback).
AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/cloudformation/aws4_request, "
    "SignedHeaders=host, Signature=0"
)
MIN = "Resources:\n  M:\n    Type: AWS::SageMaker::Model\n    Properties: {PrimaryContainer: {ModelDataUrl: s3://a/b}}\n"


def create(name: str, body: str, **extra: str) -> bytes:
    return urlencode({"Action": "CreateStack", "StackName": name, "TemplateBody": body, **extra}).encode()


CASES = [
    b"Action=CreateStack",
    b"Action=CreateStack&StackName=a",
    b"Action=CreateStack&StackName=a&TemplateBody=" + b"%5B" * 25000,
    b"Action=CreateStack&StackName=a&TemplateBody=" + b"%7B%22a%22%3A" * 4000,
    create("a", "- 1\n- 2\n"),
    create("a", MIN, **{"Tags.member.1.Value": "x"}),
    create("bad_name", MIN),
    create("f", "Resources: {M: {Type: [1]}}"),
    create("g", "Parameters: {P: {Type: String, AllowedPattern: '(', Default: x}}\n" + MIN),
    create(
        "i",
        "Mappings: {A: {b: {c: d}}}\nResources: {M: {Type: AWS::SageMaker::Model, Properties: {X: "
        "!FindInMap [A, b, [x]]}}}",
    ),
    create("j", "Resources: {M: {Type: AWS::SageMaker::Model, Properties: {ModelName: !Sub [1, 2]}}}"),
    create("k", "Resources: {M: {Type: AWS::SageMaker::Model, Properties: {ModelName: !GetAtt [M]}}}"),
    create("l", "Resources: {M: {Type: AWS::SageMaker::Model, Properties: {ModelName: !Select [x, [a]]}}}"),
    create("m", "Resources: {M: {Type: AWS::SageMaker::Model, Properties: {ModelName: !If [[1], a, b]}}}"),
    create("n", "Resources: {M: {Type: AWS::SageMaker::Model, Properties: {ModelName: !Ref {a: b}}}}"),
    create("o", "Resources: {M: {Type: AWS::SageMaker::Model, Properties: {1: 2, ModelName: !Base64 [1]}}}"),
    create("q", "Resources: {M: {Type: AWS::SageMaker::Model, DependsOn: [[x]]}}"),
    create(
        "s",
        "Parameters: {P: {Type: String, AllowedValues: [[1]]}}\nResources: {M: {Type: "
        "AWS::SageMaker::Model}}",
    ),
    create(
        "t", "Parameters: {P: {Type: String, Default: {a: 1}}}\nResources: {M: {Type: AWS::SageMaker::Model}}"
    ),
    create(
        "u",
        "Resources: {M: {Type: AWS::SageMaker::Model, Properties: {ModelName: !Join [',', [!Ref "
        "AWS::NotificationARNs]]}}}",
    ),
    b"Action=DescribeStackEvents&StackName=a&NextToken=xyz",
    b"Action=DescribeChangeSet&ChangeSetName=x",
    b"Action=GetTemplate",
    b"Action=DescribeStackResources",
    b"Action=Nope",
    b"Action=ListImports",
    b"\xff\xfe",
    b"Action=ExecuteChangeSet&ChangeSetName=arn:aws:cloudformation:us-east-1:1:changeSet/x/y",
    b"Action=CreateChangeSet&StackName=a&ChangeSetName=c&ChangeSetType=IMPORT&TemplateBody=x",
    b"Action=CreateChangeSet&StackName=zz&ChangeSetName=c&ChangeSetType=UPDATE&TemplateBody=x",
    b"Action=UpdateStack&StackName=nowhere&UsePreviousTemplate=true",
    b"Action=ValidateTemplate&TemplateURL=https://x",
    b"Action=DescribeStacks&StackName=" + b"x" * 5000,
]


@pytest.mark.parametrize("body", CASES, ids=range(len(CASES)))
def test_no_request_gets_a_5xx(server: ColdbrewServer, body: bytes) -> None:
    response = httpx.post(
        f"{server.url}/",
        content=body,
        headers={"authorization": AUTH, "content-type": "application/x-www-form-urlencoded"},
        timeout=60,
    )
    assert response.status_code in (400, 404), response.text
    code = re.search(r"<Code>(\w+)</Code>", response.text)
    assert code is not None and code[1] in ("ValidationError", "InvalidAction", "ChangeSetNotFound"), (
        response.text
    )
    message = re.search(r"<Message>(.*?)</Message>", response.text, re.S)
    assert message is not None and 0 < len(message[1]) < 4200
