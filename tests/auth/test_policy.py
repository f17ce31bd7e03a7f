"""The policy language: IAM's wildcards, explicit Deny over Allow, default deny, refused elements."""

from __future__ import annotations

import pytest

from coldbrew.auth.errors import PolicyError
from coldbrew.auth.policy import (
    Decision,
    admin_policy,
    invoke_only_policy,
    load_policy_text,
    matches,
    parse_policy,
    read_only_policy,
)

ENDPOINT = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/fraud"


def test_wildcards_match_whole_values() -> None:
    assert matches("sagemaker:Invoke*", "sagemaker:InvokeEndpoint", ignore_case=True)
    assert matches("sagemaker:invoke*", "sagemaker:InvokeEndpointAsync", ignore_case=True)
    assert not matches("sagemaker:Invoke*", "sagemaker:CreateEndpoint", ignore_case=True)
    assert matches("arn:aws:s3:::models/*", "arn:aws:s3:::models/a/b/c.tar.gz")
    assert not matches("arn:aws:s3:::models/*", "arn:aws:s3:::models2/x")
    assert matches(
        "arn:aws:sagemaker:*:*:endpoint/fraud-v?", "arn:aws:sagemaker:eu-west-1:1:endpoint/fraud-v2"
    )
    assert not matches("arn:aws:sagemaker:*:*:endpoint/fraud-v?", "arn:aws:sagemaker:r:1:endpoint/fraud-v10")
    # Resources are case-sensitive, regex characters are literal.
    assert not matches("arn:aws:s3:::Models/*", "arn:aws:s3:::models/x")
    assert not matches("arn:aws:s3:::a.b", "arn:aws:s3:::axb")


def test_explicit_deny_wins_and_default_is_deny() -> None:
    policy = parse_policy(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"},
                {"Effect": "Deny", "Action": ["sagemaker:Delete*"], "Resource": ENDPOINT},
            ],
        }
    )
    assert policy.decide("sagemaker:DescribeEndpoint", ENDPOINT) is Decision.ALLOWED
    assert policy.decide("sagemaker:DeleteEndpoint", ENDPOINT) is Decision.EXPLICIT_DENY
    assert policy.decide("sagemaker:DeleteEndpoint", ENDPOINT.replace("fraud", "other")) is Decision.ALLOWED
    assert policy.decide("s3:GetObject", "arn:aws:s3:::b/k") is Decision.IMPLICIT_DENY


def test_a_request_without_a_single_resource_needs_resource_star() -> None:
    scoped = parse_policy(
        {"Statement": {"Effect": "Allow", "Action": "sagemaker:List*", "Resource": ENDPOINT}}
    )
    assert scoped.decide("sagemaker:ListEndpoints", None) is Decision.IMPLICIT_DENY
    anywhere = parse_policy(
        {"Statement": [{"Effect": "Allow", "Action": "sagemaker:List*", "Resource": "*"}]}
    )
    assert anywhere.decide("sagemaker:ListEndpoints", None) is Decision.ALLOWED


def test_presets() -> None:
    invoke = invoke_only_policy(["Fraud"])
    assert invoke.decide("sagemaker:InvokeEndpoint", ENDPOINT) is Decision.ALLOWED
    assert invoke.decide("sagemaker:InvokeEndpointAsync", ENDPOINT) is Decision.ALLOWED
    assert invoke.decide("sagemaker:InvokeEndpoint", ENDPOINT + "2") is Decision.IMPLICIT_DENY
    assert invoke.decide("sagemaker:CreateEndpoint", ENDPOINT) is Decision.IMPLICIT_DENY
    read = read_only_policy()
    assert read.decide("sagemaker:DescribeEndpoint", ENDPOINT) is Decision.ALLOWED
    assert read.decide("sagemaker:ListEndpoints", None) is Decision.ALLOWED
    assert read.decide("s3:GetObject", "arn:aws:s3:::b/k") is Decision.ALLOWED
    assert read.decide("logs:GetLogEvents", None) is Decision.ALLOWED
    assert read.decide("coldbrew:GetMetrics", None) is Decision.ALLOWED
    for write in ("sagemaker:CreateEndpoint", "sagemaker:InvokeEndpoint", "s3:PutObject", "s3:DeleteObject"):
        assert read.decide(write, "*") is Decision.IMPLICIT_DENY, write
    assert admin_policy().decide("anything:AtAll", None) is Decision.ALLOWED


def test_round_trip_through_json() -> None:
    policy = invoke_only_policy(["a", "b"])
    assert parse_policy(policy.to_json()) == policy


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("not json", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"Statement": [{"Effect": "Maybe", "Action": "s3:*", "Resource": "*"}]}', "Effect"),
        ('{"Statement": [{"Effect": "Allow", "Action": "s3:*"}]}', "Resource"),
        ('{"Statement": [{"Effect": "Allow", "Action": [], "Resource": "*"}]}', "non-empty"),
        ('{"Statement": [{"Effect": "Allow", "Action": "GetObject", "Resource": "*"}]}', "service:Operation"),
        (
            '{"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {}}]}',
            "Condition is not supported",
        ),
        ('{"Statement": [{"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"}]}', "NotAction"),
        ('{"Statment": []}', "Unknown policy element"),
    ],
)
def test_policies_coldbrew_cannot_honour_are_refused(text: str, says: str) -> None:
    with pytest.raises(PolicyError, match=says):
        load_policy_text(text)
