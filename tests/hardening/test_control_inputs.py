"""Inputs that once got a 500 from the control API (issue 14), each a 4xx now, against a real server;
and error messages that quote at most a bounded part of what the client sent."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.hardening.wire import MiB, call, chunked_until_refused, error_of, headers_of, status_line
from tests.support import ColdbrewServer, deploy_serverless, wait_for_status

SERVERLESS = {"MemorySizeInMB": 1024, "MaxConcurrency": 1}


@pytest.fixture(scope="module")
def model(sm: Any) -> str:
    sm.create_model(
        ModelName="hard-model", PrimaryContainer={"Image": "coldbrew/sklearn", "ModelDataUrl": "s3://b/k"}
    )
    return "hard-model"


def _variant(weight: Any = 1.0, name: str = "AllTraffic") -> str:
    # As text: NaN and Infinity are what the test sends, and json.dumps writes them as such.
    return (
        f'{{"VariantName": "{name}", "ModelName": "hard-model", "InitialVariantWeight": {weight}, '
        f'"ServerlessConfig": {json.dumps(SERVERLESS)}}}'
    )


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        '{"ModelName": "m", "PrimaryContainer": {"Environment": ' + "[" * 900 + "]" * 900 + "}}",
        '{"NameContains": ' + "[" * 70 + "]" * 70 + "}",
    ],
    ids=["list-100000", "object-100000", "in-a-member-900", "just-past-64"],
)
def test_deeply_nested_json_is_refused(server: ColdbrewServer, body: str) -> None:
    status, code, message = error_of(call(server, "SageMaker.ListModels", body))
    assert (status, code) == (400, "SerializationException")
    assert "more than 64 levels deep" in message


def test_json_nested_as_deep_as_any_shape_is_still_served(server: ColdbrewServer) -> None:
    # A real request nests far less than the limit; the limit must not refuse what a shape allows.
    body = {"ModelName": "nested-ok", "PrimaryContainer": {"Image": "x", "Environment": {"A": "b"}}}
    response = call(server, "SageMaker.CreateModel", json.dumps(body))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("target", "content_type", "member"),
    [
        ("Logs_20140328.DescribeLogGroups", "application/x-amz-json-1.1", "logGroupNamePrefix"),
        ("GraniteServiceVersion20100801.ListMetrics", "application/x-amz-json-1.0", "Namespace"),
    ],
)
def test_deeply_nested_json_is_refused_by_logs_and_cloudwatch(
    server: ColdbrewServer, target: str, content_type: str, member: str
) -> None:
    for body in ("[" * 100_000 + "]" * 100_000, f'{{"{member}": ' + "[" * 500 + "]" * 500 + "}"):
        response = call(server, target, body, content_type)
        assert 400 <= response.status_code < 500, response.text
        assert "__type" in response.json()


def test_an_integer_of_more_than_4300_digits_is_refused(server: ColdbrewServer) -> None:
    # json.loads raises ValueError past Python's int-from-string limit, not a JSONDecodeError.
    status, code, message = error_of(
        call(server, "SageMaker.ListModels", '{"MaxResults": ' + "9" * 5000 + "}")
    )
    assert (status, code) == (400, "SerializationException")
    assert "4300 digits" in message
    # Just under the limit it parses, and the range check quotes it bounded.
    status, code, message = error_of(
        call(server, "SageMaker.ListModels", '{"MaxResults": ' + "9" * 4000 + "}")
    )
    assert (status, code) == (400, "ValidationException")
    assert "an integer of 4000 digits" in message and len(message) < 400


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("ListModels", '{"MaxResults": 2147483648}'),
        (
            "ListTags",
            '{"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:model/x", "MaxResults": -2147483649}',
        ),
        (
            "CreateTransformJob",
            '{"TransformJobName": "j", "ModelName": "hard-model", "TransformInput": {"DataSource": '
            '{"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in"}}}, "TransformOutput": '
            '{"S3OutputPath": "s3://b/out"}, "TransformResources": {"InstanceType": "ml.m5.large", '
            '"InstanceCount": 9223372036854775808}}',
        ),
    ],
)
def test_integers_past_what_aws_deserializes_are_refused(
    server: ColdbrewServer, operation: str, body: str
) -> None:
    # SQLite refuses integers past 64 bits with an OverflowError; AWS reads integers as 32 bits.
    status, code, message = error_of(call(server, f"SageMaker.{operation}", body))
    assert (status, code) == (400, "ValidationException")
    assert "-bit integer" in message


@pytest.mark.parametrize(
    "value", ["1e20", "-1e20", "1e400", "Infinity", "NaN", "-" + "9" * 4299, '"99999-01-01T00:00:00Z"', '"x"']
)
@pytest.mark.parametrize(
    ("operation", "member"),
    [
        ("ListModels", "CreationTimeAfter"),
        ("ListEndpointConfigs", "CreationTimeBefore"),
        ("ListEndpoints", "LastModifiedTimeAfter"),
        ("ListTransformJobs", "CreationTimeAfter"),
    ],
)
def test_out_of_range_timestamp_filters_are_refused(
    server: ColdbrewServer, operation: str, member: str, value: str
) -> None:
    status, code, message = error_of(call(server, f"SageMaker.{operation}", f'{{"{member}": {value}}}'))
    assert (status, code) == (400, "ValidationException")
    assert member[0].lower() + member[1:] in message


def test_timestamps_in_range_are_still_filters(server: ColdbrewServer, sm: Any, model: str) -> None:
    assert sm.list_models(CreationTimeAfter=0)["Models"]
    assert sm.list_models(CreationTimeAfter="9999-12-31T00:00:00Z")["Models"] == []


def _token(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def test_forged_next_tokens_are_refused(server: ColdbrewServer, sm: Any) -> None:
    for index in range(3):
        sm.create_model(ModelName=f"paged-{index}", PrimaryContainer={"Image": "x"})
    models_token = sm.list_models(MaxResults=1)["NextToken"]
    by_name_token = sm.list_models(MaxResults=1, SortBy="Name")["NextToken"]
    forged = [
        "!!!garbage",
        "=" * 3,
        _token({"a": 1}),
        _token([[1], "x"]),
        _token([1, "x"]),
        _token([1, "models", "CreationTime", 10**30, "x"]),
        _token([1, "models", "CreationTime", "not a time", "x"]),
        _token([1, "models", "CreationTime", 1.0, 7]),
        base64.urlsafe_b64encode(b"[" * 10_000).decode(),
        "x" * 8192,
    ]
    for token in forged:
        status, code, message = error_of(
            call(server, "SageMaker.ListModels", json.dumps({"NextToken": token}))
        )
        assert (status, code) == (400, "ValidationException"), token
        assert "nexttoken" in message.lower() and len(message) < 400
    # Another operation's token, and a token of another SortBy, are refused too.
    for operation, body in [
        ("ListEndpointConfigs", {"NextToken": models_token}),
        ("ListEndpoints", {"NextToken": models_token}),
        ("ListModels", {"NextToken": by_name_token}),
    ]:
        status, code, _ = error_of(call(server, f"SageMaker.{operation}", json.dumps(body)))
        assert (status, code) == (400, "ValidationException"), operation
    # The real ones page on.
    assert sm.list_models(MaxResults=1, NextToken=models_token)["Models"]
    assert sm.list_models(MaxResults=1, SortBy="Name", NextToken=by_name_token)["Models"]


def test_forged_list_tags_tokens_are_refused(server: ColdbrewServer, sm: Any, model: str) -> None:
    arn = sm.describe_model(ModelName=model)["ModelArn"]
    for token in ["9" * 30, "-1", "1e3", "٣", "x"]:
        body = json.dumps({"ResourceArn": arn, "NextToken": token})
        status, code, _ = error_of(call(server, "SageMaker.ListTags", body))
        assert (status, code) == (400, "ValidationException"), token


@pytest.mark.parametrize("weight", ["NaN", "Infinity", "-Infinity", "1e400", "9" * 4000])
def test_non_finite_numbers_are_refused_not_stored(
    server: ColdbrewServer, sm: Any, model: str, weight: str
) -> None:
    name = f"nonfinite-{abs(hash(weight))}"
    body = f'{{"EndpointConfigName": "{name}", "ProductionVariants": [{_variant(weight)}]}}'
    status, code, message = error_of(call(server, "SageMaker.CreateEndpointConfig", body))
    assert (status, code) == (400, "ValidationException")
    assert "productionVariants.1.member.initialVariantWeight" in message and "finite" in message
    with pytest.raises(sm.exceptions.ClientError):
        sm.describe_endpoint_config(EndpointConfigName=name)


def test_variant_weights_that_are_all_zero_are_refused(server: ColdbrewServer, model: str) -> None:
    body = (
        f'{{"EndpointConfigName": "zero", "ProductionVariants": [{_variant(0, "a")}, {_variant(0.0, "b")}]}}'
    )
    status, code, message = error_of(call(server, "SageMaker.CreateEndpointConfig", body))
    assert (status, code) == (400, "ValidationException")
    assert "greater than 0" in message
    # One weight above 0 is enough; one that overflows the sum is not.
    body = f'{{"EndpointConfigName": "one", "ProductionVariants": [{_variant(0, "a")}, {_variant(1, "b")}]}}'
    assert call(server, "SageMaker.CreateEndpointConfig", body).status_code == 200
    variants = f"{_variant(1e308, 'a')}, {_variant(1e308, 'b')}"
    big = f'{{"EndpointConfigName": "big", "ProductionVariants": [{variants}]}}'
    status, code, _ = error_of(call(server, "SageMaker.CreateEndpointConfig", big))
    assert (status, code) == (400, "ValidationException")


def test_weights_updated_to_zero_or_non_finite_are_refused(
    server: ColdbrewServer, sm: Any, model_archive: tuple[Path, Any]
) -> None:
    deploy_serverless(sm, "weighted", str(model_archive[0]))
    wait_for_status(sm, "weighted", "InService")
    for weight in ("0", "0.0", "NaN", "Infinity"):
        body = (
            '{"EndpointName": "weighted", "DesiredWeightsAndCapacities": '
            f'[{{"VariantName": "AllTraffic", "DesiredWeight": {weight}}}]}}'
        )
        status, code, _ = error_of(call(server, "SageMaker.UpdateEndpointWeightsAndCapacities", body))
        assert (status, code) == (400, "ValidationException"), weight
    described = sm.describe_endpoint(EndpointName="weighted")
    assert described["EndpointStatus"] == "InService"
    assert described["ProductionVariants"][0]["DesiredWeight"] == 1.0


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("SageMaker.CreateModel", {"ModelName": "x" * 6 * MiB}),
        ("SageMaker.CreateModel", {"ModelName": ["x" * 6 * MiB]}),
        ("SageMaker.CreateModel", {"ModelName": "m", "z" * 3 * MiB: 1}),
        (
            "SageMaker.CreateModel",
            {"ModelName": "m", "PrimaryContainer": {"Environment": {"k" * 3 * MiB: "v"}}},
        ),
        ("SageMaker.ListModels", {"SortBy": "y" * 6 * MiB}),
        ("SageMaker.ListModels", {"NextToken": "t" * 6 * MiB}),
        ("SageMaker.ListModels", {"MaxResults": [1] * 500_000}),
        ("SageMaker." + "X" * 100_000, {}),
        ("Logs_20140328.DescribeLogGroups", {"logGroupNamePrefix": "p" * 900_000}),
        ("Logs_20140328." + "X" * 100_000, {}),
    ],
    ids=[
        "too-long",
        "wrong-type",
        "unknown-member",
        "map-key",
        "enum",
        "token",
        "list",
        "target",
        "logs",
        "logs-target",
    ],
)
def test_error_messages_quote_a_bounded_part_of_the_value(
    server: ColdbrewServer, target: str, body: Any
) -> None:
    response = call(server, target, json.dumps(body))
    assert 400 <= response.status_code < 500
    assert len(response.content) < 2048, response.text[:300]
    assert "..." in response.json()["message"]


def test_control_bodies_are_capped_as_they_are_read(server: ColdbrewServer) -> None:
    # Declared: refused before a byte of the body is read.
    status, code, message = error_of(call(server, "SageMaker.CreateModel", b" " * (9 * MiB)))
    assert (status, code) == (400, "SerializationException")
    assert "8,388,608 bytes" in message
    # Chunked: refused once past the cap, and the connection closed instead of read on.
    raw, sent = chunked_until_refused(
        server, "/", {"X-Amz-Target": "SageMaker.CreateModel", "Content-Type": "application/x-amz-json-1.1"}
    )
    assert status_line(raw) == "HTTP/1.1 400 Bad Request"
    assert headers_of(raw)["connection"] == "close"
    assert b"SerializationException" in raw
    assert sent < 96 * MiB
    # The server is unharmed.
    assert call(server, "SageMaker.ListModels", "{}").status_code == 200


def test_logs_bodies_are_capped_as_they_are_read(server: ColdbrewServer) -> None:
    raw, sent = chunked_until_refused(
        server,
        "/",
        {"X-Amz-Target": "Logs_20140328.DescribeLogGroups", "Content-Type": "application/x-amz-json-1.1"},
    )
    assert status_line(raw) == "HTTP/1.1 400 Bad Request"
    assert headers_of(raw)["connection"] == "close"
    assert sent < 96 * MiB


@pytest.mark.parametrize("member", ["StartTime", "EndTime"])
def test_cloudwatch_times_past_a_double_are_refused(server: ColdbrewServer, member: str) -> None:
    # float() of an integer of hundreds of digits raises OverflowError, once a 500 (found by bench/fuzz.py).
    times = {"StartTime": 0, "EndTime": 60, member: 10**400}
    body = json.dumps({"MetricDataQueries": [], **times})
    response = call(server, "GraniteServiceVersion20100801.GetMetricData", body, "application/x-amz-json-1.0")
    assert response.status_code == 400, response.text
    assert response.json()["__type"].endswith("InvalidParameterValueException")
