"""Asynchronous inference through the real server: boto3's InvokeEndpointAsync, real workers, the
embedded S3 for inputs and results, moto's SNS for notifications."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from tests.support import ColdbrewServer, sklearn_archive, wait_for_status, worker_pids

BUCKET = "async-tests"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# A model whose behaviour the input picks: "sleep:S" sleeps S seconds, "crash" kills its worker,
# "reject" answers 400; anything else is answered with its length. Every input is appended to
# the file named by ORDER_FILE (when set), so tests can see what ran, and in which order.
SCRIPTED = """
import os
import time


def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    order = os.environ.get("ORDER_FILE")
    if order:
        with open(order, "ab") as f:
            f.write(body[:64] + b"\\n")
    if body.startswith(b"sleep:"):
        started = time.time()
        time.sleep(float(body[6:]))
        spans = os.environ.get("SPANS_FILE")
        if spans:
            with open(spans, "a") as f:
                f.write(f"{os.getpid()} {started} {time.time()}\\n")
        return b"slept", "text/plain"
    if body == b"crash":
        os._exit(3)
    if body == b"reject":
        raise ValueError("this input is rejected")
    return f"len={len(body)}".encode(), "application/x-length"
"""


@pytest.fixture(scope="module")
def scripted_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scripted")
    (root / "code").mkdir()
    (root / "code" / "inference.py").write_text(SCRIPTED)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, moto_url: str) -> Iterator[ColdbrewServer]:
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL_SNS": moto_url, "COLDBREW_IDLE_TIMEOUT_S": "1"}
    srv = ColdbrewServer(tmp_path_factory.mktemp("async") / "data", env=env).start()
    srv.client("s3").create_bucket(Bucket=BUCKET)
    yield srv
    srv.stop()


def deploy(
    server: ColdbrewServer,
    name: str,
    model_data: str,
    *,
    output: dict[str, Any] | None = None,
    max_concurrency: int = 2,
    instances: int | None = None,
    per_instance: int | None = None,
    environment: dict[str, str] | None = None,
) -> None:
    sm = server.client("sagemaker")
    container: dict[str, Any] = {"Image": "coldbrew/sklearn", "ModelDataUrl": model_data}
    if environment:
        container["Environment"] = environment
    sm.create_model(
        ModelName=name, PrimaryContainer=container, ExecutionRoleArn="arn:aws:iam::123456789012:role/x"
    )
    variant: dict[str, Any] = {"VariantName": "AllTraffic", "ModelName": name}
    if instances is None:
        variant["ServerlessConfig"] = {"MemorySizeInMB": 1024, "MaxConcurrency": max_concurrency}
    else:
        variant.update(InstanceType="ml.m5.large", InitialInstanceCount=instances)
    config: dict[str, Any] = {"OutputConfig": output or {"S3OutputPath": f"s3://{BUCKET}/{name}/out"}}
    if per_instance is not None:
        config["ClientConfig"] = {"MaxConcurrentInvocationsPerInstance": per_instance}
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config", ProductionVariants=[variant], AsyncInferenceConfig=config
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    wait_for_status(sm, name, "InService")


def put_input(server: ColdbrewServer, key: str, body: bytes) -> str:
    server.client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)
    return f"s3://{BUCKET}/{key}"


def split(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


def head(server: ColdbrewServer, url: str) -> dict[str, Any] | None:
    bucket, key = split(url)
    try:
        response: dict[str, Any] = server.client("s3").head_object(Bucket=bucket, Key=key)
        return response
    except ClientError:
        return None


def outcome(server: ColdbrewServer, response: dict[str, Any], timeout: float = 30) -> tuple[str, bytes, str]:
    """("output" | "failure", body, content type) once one of the two objects exists."""
    s3 = server.client("s3")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for kind, url in (("output", response["OutputLocation"]), ("failure", response["FailureLocation"])):
            bucket, key = split(url)
            try:
                got = s3.get_object(Bucket=bucket, Key=key)
            except ClientError:
                continue
            return kind, got["Body"].read(), got["ContentType"]
        time.sleep(0.05)
    raise AssertionError(f"no outcome for {response['InferenceId']} within {timeout} s")


@pytest.fixture(scope="module")
def forest(server: ColdbrewServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    archive, _ = sklearn_archive(tmp_path_factory.mktemp("forest") / "model.tar.gz")
    deploy(server, "async-forest", str(archive))
    return "async-forest"


@pytest.fixture(scope="module")
def scripted(server: ColdbrewServer, scripted_model: Path) -> str:
    deploy(server, "async-scripted", str(scripted_model), max_concurrency=2)
    return "async-scripted"


def test_a_request_is_answered_in_s3_with_the_models_content_type(
    server: ColdbrewServer, forest: str
) -> None:
    runtime = server.client("sagemaker-runtime")
    source = put_input(server, "in/row.csv", b"0.1,0.2,0.3,0.1,0.2,0.3,0.1,0.2,0.3,0.1")
    response = runtime.invoke_endpoint_async(
        EndpointName=forest, InputLocation=source, ContentType="text/csv", InferenceId="my-id 1"
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert response["InferenceId"] == "my-id 1"
    assert response["OutputLocation"].startswith(f"s3://{BUCKET}/{forest}/out/")
    assert response["OutputLocation"].endswith(".out")
    # Without an S3FailurePath, failures go under the output path.
    assert response["FailureLocation"].startswith(f"s3://{BUCKET}/{forest}/out/")
    kind, body, content_type = outcome(server, response)
    assert kind == "output"
    assert content_type == "application/json"
    assert len(json.loads(body)) == 1
    assert head(server, response["FailureLocation"]) is None


def test_a_generated_inference_id_names_the_output(server: ColdbrewServer, forest: str) -> None:
    runtime = server.client("sagemaker-runtime")
    source = put_input(server, "in/row2.csv", b"0.1,0.2,0.3,0.1,0.2,0.3,0.1,0.2,0.3,0.1")
    response = runtime.invoke_endpoint_async(
        EndpointName=forest, InputLocation=source, ContentType="text/csv"
    )
    assert response["OutputLocation"].endswith(f"/{response['InferenceId']}.out")


def test_output_path_extension_and_filename(server: ColdbrewServer, forest: str) -> None:
    runtime = server.client("sagemaker-runtime")
    source = put_input(server, "in/row3.csv", b"0.1,0.2,0.3,0.1,0.2,0.3,0.1,0.2,0.3,0.1")
    response = runtime.invoke_endpoint_async(
        EndpointName=forest,
        InputLocation=source,
        ContentType="text/csv",
        S3OutputPathExtension="team-a/2026",
        Filename="result.json",
    )
    assert response["OutputLocation"] == f"s3://{BUCKET}/{forest}/out/team-a/2026/result.json"
    assert response["FailureLocation"].startswith(f"s3://{BUCKET}/{forest}/out/team-a/2026/")
    assert outcome(server, response)[0] == "output"


def test_the_models_error_goes_to_the_failure_location(server: ColdbrewServer, scripted: str) -> None:
    runtime = server.client("sagemaker-runtime")
    source = put_input(server, "in/reject", b"reject")
    response = runtime.invoke_endpoint_async(EndpointName=scripted, InputLocation=source)
    kind, body, content_type = outcome(server, response)
    assert kind == "failure"
    # The model's own error response (the worker's JSON error body), as SageMaker stores it.
    assert content_type == "application/json"
    assert "this input is rejected" in json.loads(body)["message"]
    assert head(server, response["OutputLocation"]) is None


def test_without_a_content_type_the_input_objects_own_is_used(server: ColdbrewServer, forest: str) -> None:
    key = "in/typed.csv"
    server.client("s3").put_object(
        Bucket=BUCKET, Key=key, Body=b"0.1,0.2,0.3,0.1,0.2,0.3,0.1,0.2,0.3,0.1", ContentType="text/csv"
    )
    runtime = server.client("sagemaker-runtime")
    response = runtime.invoke_endpoint_async(EndpointName=forest, InputLocation=f"s3://{BUCKET}/{key}")
    assert outcome(server, response)[0] == "output"


def test_an_invocation_past_its_timeout_fails_with_a_clear_message(
    server: ColdbrewServer, scripted: str
) -> None:
    runtime = server.client("sagemaker-runtime")
    source = put_input(server, "in/sleep3", b"sleep:3")
    response = runtime.invoke_endpoint_async(
        EndpointName=scripted, InputLocation=source, InvocationTimeoutSeconds=1
    )
    kind, body, _ = outcome(server, response)
    assert kind == "failure"
    assert b"InvocationTimeoutSeconds (1 s)" in body


def test_a_worker_crash_is_retried_a_bounded_number_of_times(server: ColdbrewServer, scripted: str) -> None:
    runtime = server.client("sagemaker-runtime")
    source = put_input(server, "in/crash", b"crash")
    response = runtime.invoke_endpoint_async(EndpointName=scripted, InputLocation=source)
    kind, body, _ = outcome(server, response, timeout=60)
    assert kind == "failure"
    assert b"tried 3 times" in body, body
    # The endpoint still serves afterwards.
    again = runtime.invoke_endpoint_async(
        EndpointName=scripted, InputLocation=put_input(server, "in/ok", b"ok")
    )
    assert outcome(server, again)[:2] == ("output", b"len=2")


def test_a_100_mb_input(server: ColdbrewServer, scripted: str) -> None:
    size = 100 * 1024 * 1024
    source = put_input(server, "in/big", b"x" * size)
    response = server.client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName=scripted, InputLocation=source
    )
    kind, body, content_type = outcome(server, response, timeout=120)
    assert (kind, body, content_type) == ("output", f"len={size}".encode(), "application/x-length")


def test_requests_run_in_order_and_the_variant_scales_to_zero_and_back(
    server: ColdbrewServer, scripted_model: Path, tmp_path: Path
) -> None:
    order = tmp_path / "order.log"
    name = "async-fifo"
    deploy(server, name, str(scripted_model), max_concurrency=1, environment={"ORDER_FILE": str(order)})
    runtime = server.client("sagemaker-runtime")
    sources = [put_input(server, f"in/fifo-{i}", f"item-{i:02d}".encode()) for i in range(12)]
    responses = [runtime.invoke_endpoint_async(EndpointName=name, InputLocation=s) for s in sources]
    assert [outcome(server, r)[1] for r in responses] == [b"len=7"] * 12
    assert order.read_text().split() == [f"item-{i:02d}" for i in range(12)]
    # Idle for longer than the idle timeout (1 s): no worker is left.
    deadline = time.monotonic() + 20
    while worker_pids(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker_pids(server) == set()
    response = runtime.invoke_endpoint_async(EndpointName=name, InputLocation=sources[0])
    assert outcome(server, response)[:2] == ("output", b"len=7")


def test_instance_variant_takes_per_instance_concurrency_and_scales_to_zero(
    server: ColdbrewServer, scripted_model: Path, tmp_path: Path
) -> None:
    name = "async-instances"
    spans_file = tmp_path / "spans.log"
    deploy(
        server,
        name,
        str(scripted_model),
        instances=2,
        per_instance=1,
        environment={"SPANS_FILE": str(spans_file)},
    )
    runtime = server.client("sagemaker-runtime")
    sources = [put_input(server, f"in/inst-{i}", b"sleep:0.5") for i in range(6)]
    responses = [runtime.invoke_endpoint_async(EndpointName=name, InputLocation=s) for s in sources]
    assert all(outcome(server, r)[0] == "output" for r in responses)
    spans: dict[str, list[tuple[float, float]]] = {}
    for line in spans_file.read_text().splitlines():
        pid, start, end = line.split()
        spans.setdefault(pid, []).append((float(start), float(end)))
    # The queue started the second instance on demand, and each took one request at a time.
    assert len(spans) == 2
    for intervals in spans.values():
        intervals.sort()
        assert all(a[1] <= b[0] for a, b in zip(intervals, intervals[1:], strict=False))
    deadline = time.monotonic() + 20
    while worker_pids(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker_pids(server) == set()


def test_sns_notifications_on_success_and_error(
    server: ColdbrewServer, scripted_model: Path, moto_url: str
) -> None:
    def aws(service: str) -> Any:
        return boto3.client(service, endpoint_url=moto_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip

    sns, sqs = aws("sns"), aws("sqs")
    success = sns.create_topic(Name="async-success")["TopicArn"]
    error = sns.create_topic(Name="async-error")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="async-results")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    for topic in (success, error):
        sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
        )
    name = "async-sns"
    output = {
        "S3OutputPath": f"s3://{BUCKET}/{name}/out",
        "S3FailurePath": f"s3://{BUCKET}/{name}/failed",
        "NotificationConfig": {
            "SuccessTopic": success,
            "ErrorTopic": error,
            "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"],
        },
    }
    deploy(server, name, str(scripted_model), output=output)
    runtime = server.client("sagemaker-runtime")
    ok = runtime.invoke_endpoint_async(
        EndpointName=name, InputLocation=put_input(server, "in/sns-ok", b"hello"), ContentType="text/plain"
    )
    bad = runtime.invoke_endpoint_async(
        EndpointName=name, InputLocation=put_input(server, "in/sns-bad", b"reject")
    )
    assert bad["FailureLocation"].startswith(f"s3://{BUCKET}/{name}/failed/")
    messages: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 30
    while len(messages) < 2 and time.monotonic() < deadline:
        for m in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            body = json.loads(m["Body"])
            messages[body["inferenceId"]] = body
    assert set(messages) == {ok["InferenceId"], bad["InferenceId"]}
    done = messages[ok["InferenceId"]]
    assert done["invocationStatus"] == "Completed"
    assert done["eventName"] == "InferenceResult"
    assert done["requestParameters"]["endpointName"] == name
    assert done["requestParameters"]["inputLocation"] == f"s3://{BUCKET}/in/sns-ok"
    assert done["responseParameters"]["outputLocation"] == ok["OutputLocation"]
    assert done["responseBody"]["content"] == "len=5"
    failed = messages[bad["InferenceId"]]
    assert failed["invocationStatus"] == "Failed"
    assert "this input is rejected" in failed["failureReason"]
    assert "responseBody" not in failed  # only the success topic asked for the response


def test_refusals(server: ColdbrewServer, forest: str, tmp_path: Path) -> None:
    runtime = server.client("sagemaker-runtime")

    def refused(**kwargs: Any) -> str:
        with pytest.raises(ClientError) as caught:
            runtime.invoke_endpoint_async(**kwargs)
        error = caught.value.response["Error"]
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert error["Code"] == "ValidationError"
        return str(error["Message"])

    source = put_input(server, "in/refusals.csv", b"0.1,0.2,0.3,0.1,0.2,0.3,0.1,0.2,0.3,0.1")
    assert "not found" in refused(EndpointName="no-such-endpoint", InputLocation=source)
    assert "does not exist" in refused(EndpointName=forest, InputLocation=f"s3://{BUCKET}/in/missing")
    assert "bucket does not exist" in refused(EndpointName=forest, InputLocation="s3://no-such-bucket/x")
    # A real-time endpoint takes no async requests, and an async one no real-time ones.
    archive, _ = sklearn_archive(tmp_path / "model.tar.gz")
    sm = server.client("sagemaker")
    container = {"Image": "coldbrew/sklearn", "ModelDataUrl": str(archive)}
    sm.create_model(
        ModelName="realtime", PrimaryContainer=container, ExecutionRoleArn="arn:aws:iam::123456789012:role/x"
    )
    sm.create_endpoint_config(
        EndpointConfigName="realtime-config",
        ProductionVariants=[{"VariantName": "v", "ModelName": "realtime",
                             "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1}}],
    )  # fmt: skip
    sm.create_endpoint(EndpointName="realtime", EndpointConfigName="realtime-config")
    wait_for_status(sm, "realtime", "InService")
    assert "AsyncInferenceConfig" in refused(EndpointName="realtime", InputLocation=source)
    with pytest.raises(ClientError) as caught:
        runtime.invoke_endpoint(EndpointName=forest, Body=b"1", ContentType="text/csv")
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert "InvokeEndpointAsync" in caught.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [
        ("X-Amzn-SageMaker-RequestTTLSeconds", "59", "requestTTLSeconds"),
        ("X-Amzn-SageMaker-RequestTTLSeconds", "21601", "requestTTLSeconds"),
        ("X-Amzn-SageMaker-RequestTTLSeconds", "soon", "requestTTLSeconds"),
        ("X-Amzn-SageMaker-InvocationTimeoutSeconds", "3601", "invocationTimeoutSeconds"),
        ("X-Amzn-SageMaker-InvocationTimeoutSeconds", "9" * 5000, "invocationTimeoutSeconds"),
        ("X-Amzn-SageMaker-Inference-Id", "tab\there", "inferenceId"),
        ("X-Amzn-SageMaker-Inference-Id", "x" * 65, "inferenceId"),
        ("X-Amzn-SageMaker-S3OutputPathExtension", "s3://elsewhere", "s3OutputPathExtension"),
        ("X-Amzn-SageMaker-Filename", "a..b", "filename"),
        ("X-Amzn-SageMaker-InputLocation", "http://example.com/x", "InputLocation"),
    ],
)
def test_bad_headers_are_400s_from_the_server(
    server: ColdbrewServer, forest: str, header: str, value: str, expected: str
) -> None:
    """What boto3 would refuse client-side, sent raw: the server refuses it too, never a 5xx."""
    source = put_input(server, "in/raw.csv", b"0.1,0.2,0.3,0.1,0.2,0.3,0.1,0.2,0.3,0.1")
    headers = {"X-Amzn-SageMaker-InputLocation": source, header: value}
    reply = httpx.post(f"{server.url}/endpoints/{forest}/async-invocations", headers=headers, timeout=10)
    assert reply.status_code == 400, reply.text
    assert reply.headers["x-amzn-errortype"] == "ValidationError"
    assert expected in reply.json()["message"]
    assert len(reply.text) < 2000


def test_a_body_is_refused_rather_than_read_whole(server: ColdbrewServer, forest: str) -> None:
    source = put_input(server, "in/body.csv", b"0.1")
    reply = httpx.post(
        f"{server.url}/endpoints/{forest}/async-invocations",
        headers={"X-Amzn-SageMaker-InputLocation": source},
        content=b"x" * (1024 * 1024),
        timeout=10,
    )
    assert reply.status_code == 400
    assert "InputLocation" in reply.json()["message"]


def _output(**members: Any) -> dict[str, Any]:
    return {"OutputConfig": {"S3OutputPath": "s3://b/o", **members}}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"OutputConfig": {}}, "S3OutputPath is required"),
        ({"OutputConfig": {"S3OutputPath": "https://bucket.s3.amazonaws.com/out"}}, "not an S3 URI"),
        (_output(S3FailurePath="s3:/x"), "s3FailurePath"),
        (
            _output(NotificationConfig={"IncludeInferenceResponseIn": ["ERROR_NOTIFICATION_TOPIC"]}),
            "no ErrorTopic",
        ),
        (_output(NotificationConfig={"SuccessTopic": "not-an-arn"}), "successTopic"),
        (
            {**_output(), "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 0}},
            "maxConcurrentInvocationsPerInstance",
        ),
    ],
)
def test_async_inference_config_is_validated(
    server: ColdbrewServer, forest: str, config: dict[str, Any], expected: str
) -> None:
    sm = server.client("sagemaker", parameter_validation=False)
    with pytest.raises(ClientError) as caught:
        sm.create_endpoint_config(
            EndpointConfigName="bad-async",
            ProductionVariants=[{"VariantName": "v", "ModelName": forest,
                                 "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1}}],
            AsyncInferenceConfig=config,
        )  # fmt: skip
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert expected in caught.value.response["Error"]["Message"]


def test_describe_endpoint_config_returns_the_async_config(server: ColdbrewServer, forest: str) -> None:
    config = {
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
        "OutputConfig": {
            "S3OutputPath": f"s3://{BUCKET}/described/out",
            "KmsKeyId": "arn:aws:kms:us-east-1:123456789012:key/abc",
            "NotificationConfig": {"SuccessTopic": "arn:aws:sns:us-east-1:123456789012:done"},
        },
    }
    sm = server.client("sagemaker")
    sm.create_endpoint_config(
        EndpointConfigName="described-async",
        ProductionVariants=[{"VariantName": "v", "ModelName": forest, "InstanceType": "ml.m5.large",
                             "InitialInstanceCount": 1}],
        AsyncInferenceConfig=config,
    )  # fmt: skip
    assert sm.describe_endpoint_config(EndpointConfigName="described-async")["AsyncInferenceConfig"] == config
    # The key is accepted, and the server says it is not applied.
    assert "KmsKeyId is accepted but not applied" in server.log()


def test_deleting_the_endpoint_fails_what_is_still_queued(
    server: ColdbrewServer, scripted_model: Path
) -> None:
    name = "async-deleted"
    deploy(server, name, str(scripted_model), max_concurrency=1)
    runtime = server.client("sagemaker-runtime")
    running = runtime.invoke_endpoint_async(
        EndpointName=name, InputLocation=put_input(server, "in/del0", b"sleep:1")
    )
    queued = [
        runtime.invoke_endpoint_async(EndpointName=name, InputLocation=put_input(server, f"in/del{i}", b"x"))
        for i in range(1, 4)
    ]
    time.sleep(0.3)
    server.client("sagemaker").delete_endpoint(EndpointName=name)
    assert outcome(server, running)[:2] == ("output", b"slept")  # what was running finishes
    for response in queued:
        kind, body, _ = outcome(server, response)
        assert kind == "failure"
        assert f"Endpoint {name} was deleted".encode() in body
