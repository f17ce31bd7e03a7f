"""Bad requests get CloudWatch's error codes and messages in the protocol they came in, never a 5xx,
a hang or unbounded work: validation through real clients, garbage through raw HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
from botocore.exceptions import ClientError

from tests.cloudwatch.clients import PROTOCOLS, cloudwatch, dimensions
from tests.support import ColdbrewServer

NOW = time.time() // 60 * 60
GOOD: dict[str, Any] = {
    "Namespace": "AWS/SageMaker",
    "MetricName": "ModelLatency",
    "Dimensions": dimensions("ep"),
    "StartTime": NOW - 3600,
    "EndTime": NOW,
    "Period": 60,
    "Statistics": ["Average"],
}
CBOR_PATH = "/service/GraniteServiceVersion20100801/operation/"


@pytest.fixture
def endpoint_env(server: ColdbrewServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)


def _refused(call: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as refused:
        call(**kwargs)
    response: dict[str, Any] = refused.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return response["Error"]


STATISTICS_CASES = [
    ({"Period": 90}, "InvalidParameterValue", "The parameter Period must be a multiple of 60."),
    ({"Period": 0}, "InvalidParameterValue", "The parameter Period must be greater than 0."),
    (
        {"StartTime": NOW - 2 * 86400},
        "InvalidParameterCombination",
        "You have requested up to 2,880 datapoints, which exceeds the limit of 1,440. You may reduce the "
        "datapoints requested by increasing Period, or decreasing the time range.",
    ),
    ({"Statistics": []}, "MissingParameter", "Must specify either Statistics or ExtendedStatistics."),
    (
        {"ExtendedStatistics": ["p99"]},
        "InvalidParameterCombination",
        "Must specify either Statistics or ExtendedStatistics, but not both.",
    ),
    (
        {"Statistics": ["Median"]},
        "InvalidParameterValue",
        "The parameter Statistics.member.1 must be a value in the set [SampleCount, Average, Sum, Minimum, "
        "Maximum].",
    ),
    ({"Statistics": [], "ExtendedStatistics": ["p101"]}, "InvalidParameterValue", "p0.0 and p100"),
    ({"Statistics": [], "ExtendedStatistics": ["tm99"]}, "InvalidParameterValue", "p0.0 and p100"),
    ({"EndTime": NOW - 3600}, "InvalidParameterValue",
     "The parameter StartTime must be less than the parameter EndTime."),
    ({"Namespace": None}, "MissingParameter", "The parameter Namespace is required."),
    ({"Unit": "Furlongs"}, "InvalidParameterValue", "The parameter Unit must be a value in the set"),
    ({"Dimensions": [{"Name": "EndpointName"}]}, "MissingParameter",
     "The parameter Dimensions.member.1.Value is required."),
]  # fmt: skip


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_get_metric_statistics_is_validated_as_cloudwatch_does(
    endpoint_env: None, tmp_path: Path, protocol: str
) -> None:
    cw = cloudwatch(protocol, tmp_path, parameter_validation=False)  # the server's checks, not botocore's
    exceptions = {
        "InvalidParameterValue": cw.exceptions.InvalidParameterValueException,
        "InvalidParameterCombination": cw.exceptions.InvalidParameterCombinationException,
        "MissingParameter": cw.exceptions.MissingRequiredParameterException,
    }
    for change, code, message in STATISTICS_CASES:
        params = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
        with pytest.raises(exceptions[code]) as refused:
            cw.get_metric_statistics(**params)
        error = refused.value.response["Error"]
        assert error["Code"] == code and message in error["Message"], (change, error)
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_get_metric_data_and_list_metrics_are_validated(
    endpoint_env: None, tmp_path: Path, protocol: str
) -> None:
    cw = cloudwatch(protocol, tmp_path)
    metric = {"Namespace": "AWS/SageMaker", "MetricName": "Invocations", "Dimensions": dimensions("ep")}
    query = {"Id": "a", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Sum"}}
    window = {"StartTime": NOW - 3600, "EndTime": NOW}
    cases = [
        ([{**query, "Id": f"q{i}"} for i in range(501)], "must not have a size greater than 500"),
        ([{**query, "Id": "Upper"}], "MetricDataQueries.member.1.Id is not valid"),
        ([query, query], "MetricDataQueries.member.2.Id is not unique"),
        ([{**query, "MetricStat": {**query["MetricStat"], "Stat": "Median"}}], "is not a valid statistic"),
        ([{**query, "MetricStat": {**query["MetricStat"], "Period": 30}}], "is not a valid period"),
        ([{"Id": "e", "Expression": "SUM(METRICS())"}], "does not evaluate metric math"),
    ]
    for queries, message in cases:
        error = _refused(cw.get_metric_data, MetricDataQueries=queries, **window)
        assert error["Code"] == "ValidationError" and message in error["Message"], (queries[:1], error)
    error = _refused(cw.get_metric_data, MetricDataQueries=[query], StartTime=NOW, EndTime=NOW - 60)
    assert error["Code"] == "ValidationError"
    error = _refused(cw.list_metrics, RecentlyActive="PT1H")
    assert error["Code"] == "InvalidParameterValue" and "PT3H" in error["Message"]


def test_unserved_operations_are_named(endpoint_env: None, tmp_path: Path) -> None:
    for protocol in PROTOCOLS:
        cw = cloudwatch(protocol, tmp_path)
        error = _refused(cw.put_metric_data, Namespace="Mine", MetricData=[{"MetricName": "m", "Value": 1.0}])
        assert error["Code"] == "InvalidAction"
        assert "GetMetricStatistics, GetMetricData and ListMetrics, not PutMetricData" in error["Message"]


# --- raw HTTP ---------------------------------------------------------------------------------------


def _cbor(server: ColdbrewServer, operation: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.url}{CBOR_PATH}{operation}",
        content=body,
        headers={"smithy-protocol": "rpc-v2-cbor", "content-type": "application/cbor"},
        timeout=30,
    )


def _cbor_error(response: httpx.Response, code: str) -> str:
    assert response.status_code == 400, response.content
    assert response.headers["smithy-protocol"] == "rpc-v2-cbor"
    assert response.headers["x-amzn-query-error"] == f"{code};Sender"
    body = cbor2.loads(response.content)
    assert body["__type"].endswith(("#" + code, "Exception"))
    message: str = body["message"]
    return message


def test_garbage_cbor_is_a_400_in_cbor(server: ColdbrewServer) -> None:
    good = dict(
        GOOD, StartTime=cbor2.CBORTag(1, GOOD["StartTime"]), EndTime=cbor2.CBORTag(1, GOOD["EndTime"])
    )
    assert _cbor(server, "GetMetricStatistics", cbor2.dumps(good)).status_code == 200
    garbage = [
        b"\xff\xfe\xfd",
        b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff",  # an array of 2**64 - 1 items, then nothing
        b"\x81" * 100_000,  # nested 100,000 deep
        b"\xc2\x5a\x00\x08\x00\x00" + b"\xff" * 0x80000,  # a 512 KiB bignum
        cbor2.dumps([1, 2, 3]),  # not a map
        cbor2.dumps([[1]] * 2, value_sharing=True),  # a shared container
    ]
    for body in garbage:
        _cbor_error(_cbor(server, "GetMetricStatistics", body), "SerializationException")
    wrong = [
        ({**good, "Period": "sixty"}, "Period"),
        ({**good, "StartTime": cbor2.CBORTag(1, 4e10)}, "StartTime"),  # in the year 3237
        ({**good, "Statistics": "Average"}, "Statistics"),
        ({**good, "Dimensions": [{"Name": 7, "Value": "x"}]}, "Dimensions.member.1.Name"),
    ]
    for body, name in wrong:
        assert name in _cbor_error(
            _cbor(server, "GetMetricStatistics", cbor2.dumps(body)), "InvalidParameterValue"
        )
    assert "not PutMetricData" in _cbor_error(
        _cbor(server, "PutMetricData", cbor2.dumps({})), "InvalidAction"
    )
    assert "not valid" in _cbor_error(_cbor(server, "Nothing", b""), "InvalidAction")


def test_garbage_json_and_forms_are_400s(server: ColdbrewServer) -> None:
    def post_json(body: bytes) -> httpx.Response:
        headers = {
            "x-amz-target": "GraniteServiceVersion20100801.ListMetrics",
            "content-type": "application/x-amz-json-1.0",
        }
        return httpx.post(server.url, content=body, headers=headers, timeout=30)  # fmt: skip

    assert post_json(b"{}").status_code == 200
    for body in (b"{not json", b"[" * 100_000, b'"a string"', json.dumps({"Namespace": 5}).encode()):
        response = post_json(body)
        assert response.status_code == 400, body[:20]
        assert response.json()["__type"].startswith("com.amazonaws.cloudwatch#")
        assert ";Sender" in response.headers["x-amzn-query-error"]

    def post_form(body: str) -> httpx.Response:
        headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
        return httpx.post(server.url, content=body.encode(), headers=headers, timeout=30)

    ok = post_form("Action=ListMetrics&Version=2010-08-01")
    assert ok.status_code == 200 and b"<ListMetricsResponse" in ok.content
    for body, code in [
        ("Action=Nothing&Version=2010-08-01", "InvalidAction"),
        ("Version=2010-08-01", "InvalidAction"),
        ("Action=GetMetricStatistics&Namespace=AWS%2FSageMaker", "MissingParameter"),
        ("Action=ListMetrics&Dimensions.member.1.Value=x", "MissingParameter"),
        ("Action=GetMetricStatistics&Namespace=n&MetricName=m&StartTime=yesterday&EndTime=now&Period=60",
         "InvalidParameterValue"),
    ]:  # fmt: skip
        response = post_form(body)
        assert response.status_code == 400, body
        assert b"<ErrorResponse" in response.content and b"<Type>Sender</Type>" in response.content
        assert f"<Code>{code}</Code>".encode() in response.content, (body, response.content)


def test_an_oversized_body_is_refused_as_it_is_read(server: ColdbrewServer) -> None:
    response = _cbor(server, "GetMetricData", b"\x00" * (2 * 1024 * 1024))
    assert response.status_code == 413
    assert cbor2.loads(response.content)["__type"].endswith("RequestEntityTooLarge")


def test_the_largest_requests_are_answered_in_bounded_time(
    server: ColdbrewServer, endpoint_env: None, tmp_path: Path
) -> None:
    cw = cloudwatch(None, tmp_path)
    metric = {"Namespace": "AWS/SageMaker", "MetricName": "ModelLatency", "Dimensions": dimensions("ep")}
    queries = [
        {"Id": f"q{i}", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "p99"}} for i in range(500)
    ]
    started = time.monotonic()
    page = cw.get_metric_data(MetricDataQueries=queries, StartTime=NOW - 450 * 86400, EndTime=NOW)
    assert time.monotonic() - started < 10
    assert "NextToken" in page  # 500 queries of 15 months of minutes: more than one page's budget
    started = time.monotonic()
    answer = cw.get_metric_statistics(
        **{**GOOD, "StartTime": 0, "EndTime": 32503679999, "Period": 60 * 60 * 24 * 365 * 30}
    )
    assert answer["Datapoints"] == [] and time.monotonic() - started < 10
