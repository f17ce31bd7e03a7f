"""Which action on which resource each request is (pure: no server)."""

from __future__ import annotations

import json

import pytest

from coldbrew.auth.actions import Need, RequestFacts, needs_for

ACCOUNT, REGION = "123456789012", "eu-west-1"


def facts(
    service: str | None,
    method: str,
    path: str,
    body: bytes | None = None,
    query: dict[str, str] | None = None,
    **headers: str,
) -> RequestFacts:
    lowered = {k.replace("_", "-").lower(): v for k, v in headers.items()}
    return RequestFacts(service, method, path, query or {}, lowered, body, REGION, ACCOUNT)


def control(operation: str, **body: object) -> list[Need]:
    request = facts(
        "sagemaker", "POST", "/", json.dumps(body).encode(), x_amz_target=f"SageMaker.{operation}"
    )
    return needs_for(request)


def arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name}"


def test_sagemaker_control_operations_name_their_resource() -> None:
    assert control("CreateEndpoint", EndpointName="Fraud", EndpointConfigName="c") == [
        Need("sagemaker:CreateEndpoint", arn("endpoint", "fraud"))
    ]
    assert control("DescribeEndpointConfig", EndpointConfigName="C1") == [
        Need("sagemaker:DescribeEndpointConfig", arn("endpoint-config", "c1"))
    ]
    assert control("CreateModel", ModelName="m") == [Need("sagemaker:CreateModel", arn("model", "m"))]
    assert control("DescribeTransformJob", TransformJobName="j") == [
        Need("sagemaker:DescribeTransformJob", arn("transform-job", "j"))
    ]
    assert control(
        "UpdateEndpointWeightsAndCapacities", EndpointName="e", DesiredWeightsAndCapacities=[]
    ) == [Need("sagemaker:UpdateEndpointWeightsAndCapacities", arn("endpoint", "e"))]
    tagged = arn("model", "m")
    assert control("AddTags", ResourceArn=tagged, Tags=[]) == [Need("sagemaker:AddTags", tagged)]
    assert control("ListEndpoints") == [Need("sagemaker:ListEndpoints", None)]


def test_an_unreadable_control_body_has_no_resource() -> None:
    request = facts("sagemaker", "POST", "/", b"{not json", x_amz_target="SageMaker.DeleteEndpoint")
    assert needs_for(request) == [Need("sagemaker:DeleteEndpoint", None)]
    deep = facts("sagemaker", "POST", "/", b"[" * 100_000, x_amz_target="SageMaker.DeleteEndpoint")
    assert needs_for(deep) == [Need("sagemaker:DeleteEndpoint", None)]


def test_runtime_invocations() -> None:
    assert needs_for(facts("sagemaker", "POST", "/endpoints/Fraud/invocations", b"1,2")) == [
        Need("sagemaker:InvokeEndpoint", arn("endpoint", "fraud"))
    ]
    assert needs_for(facts(None, "POST", "/endpoints/fraud/async-invocations")) == [
        Need("sagemaker:InvokeEndpointAsync", arn("endpoint", "fraud"))
    ]


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "expected"),
    [
        ("GET", "/", {}, {}, [Need("s3:ListAllMyBuckets", None)]),
        ("PUT", "/models", {}, {}, [Need("s3:CreateBucket", "arn:aws:s3:::models")]),
        ("HEAD", "/models", {}, {}, [Need("s3:ListBucket", "arn:aws:s3:::models")]),
        ("GET", "/models", {"list-type": "2"}, {}, [Need("s3:ListBucket", "arn:aws:s3:::models")]),
        ("GET", "/models", {"location": ""}, {}, [Need("s3:GetBucketLocation", "arn:aws:s3:::models")]),
        ("DELETE", "/models", {}, {}, [Need("s3:DeleteBucket", "arn:aws:s3:::models")]),
        ("POST", "/models", {"delete": ""}, {}, [Need("s3:DeleteObject", "arn:aws:s3:::models/*")]),
        ("GET", "/models/a/b.tar.gz", {}, {}, [Need("s3:GetObject", "arn:aws:s3:::models/a/b.tar.gz")]),
        ("HEAD", "/models/k", {}, {}, [Need("s3:GetObject", "arn:aws:s3:::models/k")]),
        ("PUT", "/models/k", {}, {}, [Need("s3:PutObject", "arn:aws:s3:::models/k")]),
        ("POST", "/models/k", {"uploads": ""}, {}, [Need("s3:PutObject", "arn:aws:s3:::models/k")]),
        ("DELETE", "/models/k", {}, {}, [Need("s3:DeleteObject", "arn:aws:s3:::models/k")]),
        (
            "DELETE",
            "/models/k",
            {"uploadId": "u"},
            {},
            [Need("s3:AbortMultipartUpload", "arn:aws:s3:::models/k")],
        ),
        (
            "PUT",
            "/models/copy",
            {},
            {"x-amz-copy-source": "/src/a%20b"},
            [Need("s3:PutObject", "arn:aws:s3:::models/copy"), Need("s3:GetObject", "arn:aws:s3:::src/a b")],
        ),
    ],
)
def test_s3_by_method_path_and_subresource(
    method: str, path: str, query: dict[str, str], headers: dict[str, str], expected: list[Need]
) -> None:
    request = RequestFacts(
        "s3", method, path, query, {"host": "127.0.0.1:8080", **headers}, None, REGION, ACCOUNT
    )
    assert needs_for(request, ["localhost"]) == expected


def test_s3_virtual_hosted_style_takes_the_bucket_from_the_host() -> None:
    request = RequestFacts(
        "s3", "GET", "/a/key", {}, {"host": "models.localhost:8080"}, None, REGION, ACCOUNT
    )
    assert needs_for(request, ["localhost"]) == [Need("s3:GetObject", "arn:aws:s3:::models/a/key")]


def test_cloudwatch_in_its_three_protocols() -> None:
    target = "GraniteServiceVersion20100801.GetMetricData"
    assert needs_for(facts("monitoring", "POST", "/", b"{}", x_amz_target=target)) == [
        Need("cloudwatch:GetMetricData", None)
    ]
    cbor_path = "/service/GraniteServiceVersion20100801/operation/ListMetrics"
    assert needs_for(facts("monitoring", "POST", cbor_path, b"\xa0")) == [
        Need("cloudwatch:ListMetrics", None)
    ]
    form = b"Action=PutMetricData&Version=2010-08-01&Namespace=x"
    assert needs_for(facts("monitoring", "POST", "/", form)) == [Need("cloudwatch:PutMetricData", None)]


def test_logs_name_the_log_group() -> None:
    body = json.dumps({"logGroupName": "/aws/sagemaker/Endpoints/fraud", "logStreamName": "s"}).encode()
    request = facts("logs", "POST", "/", body, x_amz_target="Logs_20140328.GetLogEvents")
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/fraud:*"
    assert needs_for(request) == [Need("logs:GetLogEvents", group)]
    listing = facts("logs", "POST", "/", b"{}", x_amz_target="Logs_20140328.DescribeLogGroups")
    assert needs_for(listing) == [Need("logs:DescribeLogGroups", None)]


def test_gateway_routes() -> None:
    assert needs_for(facts(None, "GET", "/metrics")) == [Need("coldbrew:GetMetrics", None)]
    assert needs_for(facts(None, "GET", "/ui/endpoints/e")) == [Need("coldbrew:ViewDashboard", None)]
    assert needs_for(facts(None, "GET", "/no-such-route")) == []
    assert needs_for(facts("sts", "POST", "/")) == []
