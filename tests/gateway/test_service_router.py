"""Which service a request is for, as AWS clients send them (signing names from botocore)."""

from __future__ import annotations

import botocore.session
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from coldbrew.gateway.service_router import service_of

CREDENTIALS = Credentials("AKID", "secret")


def _signed(service: str, method: str = "GET", url: str = "http://127.0.0.1:8080/b/k") -> dict[bytes, bytes]:
    request = AWSRequest(method=method, url=url, data=b"")
    SigV4Auth(CREDENTIALS, service, "us-east-1").add_auth(request)
    return {k.lower().encode(): v.encode() if isinstance(v, str) else v for k, v in request.headers.items()}


@pytest.mark.parametrize("service", ["s3", "monitoring", "logs", "sagemaker", "sts"])
def test_the_signing_name_in_the_credential_scope_decides(service: str) -> None:
    assert service_of("POST", "/", "", _signed(service)) == service


def test_botocores_signing_names_are_the_ones_routed() -> None:
    session = botocore.session.get_session()
    names = {
        s: session.get_service_model(s).signing_name
        for s in ("s3", "cloudwatch", "logs", "sagemaker-runtime")
    }
    assert names == {"s3": "s3", "cloudwatch": "monitoring", "logs": "logs", "sagemaker-runtime": "sagemaker"}


def test_a_presigned_url_is_routed_by_its_query() -> None:
    request = AWSRequest(method="GET", url="http://127.0.0.1:8080/bucket/key.txt")
    SigV4QueryAuth(CREDENTIALS, "s3", "us-east-1", expires=60).add_auth(request)
    query = request.url.split("?", 1)[1]
    assert service_of("GET", "/bucket/key.txt", query, {}) == "s3"


def test_unsigned_requests_by_protocol() -> None:
    assert service_of("POST", "/", "", {b"x-amz-target": b"SageMaker.ListEndpoints"}) == "sagemaker"
    assert service_of("POST", "/", "", {b"x-amz-target": b"Logs_20140328.GetLogEvents"}) == "logs"
    json_cw = {b"x-amz-target": b"GraniteServiceVersion20100801.GetMetricData"}
    assert service_of("POST", "/", "", json_cw) == "monitoring"
    cbor = {b"smithy-protocol": b"rpc-v2-cbor"}
    assert (
        service_of("POST", "/service/GraniteServiceVersion20100801/operation/ListMetrics", "", cbor)
        == "monitoring"
    )
    form = {b"content-type": b"application/x-www-form-urlencoded; charset=utf-8"}
    assert service_of("POST", "/", "", form) == "monitoring"
    # The gateway's own: the invocations API, /ping, /metrics.
    assert service_of("POST", "/endpoints/e/invocations", "", {b"content-type": b"text/csv"}) is None
    assert service_of("GET", "/ping", "", {}) is None
