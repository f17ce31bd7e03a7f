"""Invoking endpoints through real worker processes with a real sagemaker-runtime client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from botocore.exceptions import ClientError
from sklearn.datasets import load_diabetes

from tests.support import ColdbrewServer, deploy_serverless, tar_gz, wait_for_status, worker_pids

ROWS = load_diabetes(return_X_y=True)[0][:5]


@pytest.fixture(scope="module")
def runtime(server: ColdbrewServer) -> Any:
    return server.client("sagemaker-runtime", read_timeout=120)


def invoke_json(
    runtime: Any, name: str, payload: dict[str, Any], **kwargs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    response = runtime.invoke_endpoint(
        EndpointName=name, Body=json.dumps(payload), ContentType="application/json", **kwargs
    )
    return json.loads(response["Body"].read()), response


@pytest.fixture(scope="module")
def plain(sm: Any, model_archive: tuple[Path, Any]) -> str:
    deploy_serverless(sm, "plain", model_archive[0].as_uri(), max_concurrency=2)
    wait_for_status(sm, "plain", "InService")
    return "plain"


@pytest.fixture(scope="module")
def scripted(sm: Any, scripted_archive: Path) -> str:
    deploy_serverless(sm, "scripted", scripted_archive.as_uri(), max_concurrency=1)
    wait_for_status(sm, "scripted", "InService")
    return "scripted"


def test_default_sklearn_handlers_csv_and_json(
    runtime: Any, plain: str, model_archive: tuple[Path, Any]
) -> None:
    _, model = model_archive
    expected = model.predict(ROWS)
    csv_body = "\n".join(",".join(repr(float(v)) for v in row) for row in ROWS)
    response = runtime.invoke_endpoint(
        EndpointName=plain, Body=csv_body, ContentType="text/csv", Accept="text/csv"
    )
    assert response["ContentType"].startswith("text/csv")
    assert response["InvokedProductionVariant"] == "AllTraffic"
    got = np.array([float(line) for line in response["Body"].read().decode().split()])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    response = runtime.invoke_endpoint(
        EndpointName=plain,
        Body=json.dumps(ROWS.tolist()),
        ContentType="application/json",
        Accept="application/json",
    )
    assert response["ContentType"].startswith("application/json")
    np.testing.assert_allclose(np.array(json.loads(response["Body"].read())).ravel(), expected, rtol=1e-12)


def test_user_handlers_and_custom_attributes(
    runtime: Any, scripted: str, model_archive: tuple[Path, Any]
) -> None:
    body, response = invoke_json(runtime, scripted, {"rows": ROWS.tolist()}, CustomAttributes="trace=abc")
    np.testing.assert_allclose(body["predictions"], model_archive[1].predict(ROWS))
    assert response["CustomAttributes"] == "echo=trace=abc"
    assert response["ContentType"] == "application/json"


def test_handler_exception_is_a_model_error(runtime: Any, scripted: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        invoke_json(runtime, scripted, {"rows": ROWS.tolist(), "fail": "bad feature 7"})
    error = excinfo.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert "bad feature 7" in error["Error"]["Message"]
    assert error["OriginalStatusCode"] == 500
    assert isinstance(excinfo.value, runtime.exceptions.ModelError)


def test_unknown_endpoint_and_variant(runtime: Any, plain: str) -> None:
    with pytest.raises(runtime.exceptions.ValidationError) as excinfo:
        runtime.invoke_endpoint(EndpointName="nobody", Body=b"1", ContentType="text/csv")
    assert excinfo.value.response["Error"]["Message"] == "Endpoint nobody of account 123456789012 not found."
    with pytest.raises(runtime.exceptions.ValidationError) as excinfo:
        runtime.invoke_endpoint(EndpointName=plain, Body=b"1", ContentType="text/csv", TargetVariant="Nope")
    assert "Nope" in excinfo.value.response["Error"]["Message"]


def test_oversized_payload(server: ColdbrewServer, runtime: Any, plain: str) -> None:
    # SageMaker's answer for a serverless body over 4 MB (6 MB for instances).
    with pytest.raises(runtime.exceptions.ValidationError) as excinfo:
        runtime.invoke_endpoint(EndpointName=plain, Body=b"1" * (4 * 1024 * 1024 + 1), ContentType="text/csv")
    request_id = excinfo.value.response["ResponseMetadata"]["RequestId"]
    assert excinfo.value.response["Error"]["Message"] == f"Request {request_id} has oversize body."
    # A chunked body (no Content-Length) is refused as it is read, not after it was read whole.
    chunk = b"1" * (1024 * 1024)

    def chunks() -> Iterator[bytes]:
        for _ in range(96):
            yield chunk

    response = httpx.post(
        f"{server.url}/endpoints/{plain}/invocations",
        content=chunks(),
        headers={"Content-Type": "text/csv"},
        timeout=60,
    )
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"] == "ValidationError"
    assert response.json()["message"].endswith("has oversize body.")
    # The endpoint is unharmed.
    runtime.invoke_endpoint(EndpointName=plain, Body=",".join(map(str, ROWS[0])), ContentType="text/csv")


def test_custom_attributes_are_at_most_1024_visible_ascii_characters(
    server: ColdbrewServer, runtime: Any, plain: str
) -> None:
    row = ",".join(map(str, ROWS[0]))
    runtime.invoke_endpoint(
        EndpointName=plain, Body=row, ContentType="text/csv", CustomAttributes="a=1 b" * 200
    )
    with pytest.raises(runtime.exceptions.ValidationError) as excinfo:
        runtime.invoke_endpoint(
            EndpointName=plain, Body=row, ContentType="text/csv", CustomAttributes="x" * 1025
        )
    assert "Member must have length less than or equal to 1024" in excinfo.value.response["Error"]["Message"]
    # boto3 itself refuses non-ASCII header values, so this one is sent by hand.
    response = httpx.post(
        f"{server.url}/endpoints/{plain}/invocations",
        content=row,
        headers=[
            ("Content-Type", "text/csv"),
            ("X-Amzn-SageMaker-Custom-Attributes", "caf\xe9".encode("latin-1")),
        ],
    )
    assert response.status_code == 400
    assert response.json()["message"].endswith("Member must consist of visible US-ASCII characters")


def test_replies_carry_content_length(server: ColdbrewServer, plain: str) -> None:
    row = ",".join(map(str, ROWS[0]))
    ok = httpx.post(
        f"{server.url}/endpoints/{plain}/invocations", content=row, headers={"Content-Type": "text/csv"}
    )
    assert ok.status_code == 200
    assert int(ok.headers["content-length"]) == len(ok.content)
    assert "transfer-encoding" not in ok.headers
    missing = httpx.post(f"{server.url}/endpoints/nobody/invocations", content=row)
    assert int(missing.headers["content-length"]) == len(missing.content)


def test_invocations_match_the_endpoint_name_case_sensitively(runtime: Any, plain: str) -> None:
    row = ",".join(map(str, ROWS[0]))
    with pytest.raises(runtime.exceptions.ValidationError) as excinfo:
        runtime.invoke_endpoint(EndpointName=plain.upper(), Body=row, ContentType="text/csv")
    assert excinfo.value.response["Error"]["Message"] == (
        f"Endpoint {plain.upper()} of account 123456789012 not found."
    )


def test_throttling_past_max_concurrency(runtime: Any, scripted: str) -> None:
    invoke_json(runtime, scripted, {"rows": ROWS.tolist()})  # warm
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(invoke_json, runtime, scripted, {"rows": ROWS.tolist(), "sleep": 1.5})
        time.sleep(0.3)
        with pytest.raises(ClientError) as excinfo:
            invoke_json(runtime, scripted, {"rows": ROWS.tolist()})
        assert slow.result()[0]["predictions"]
    error = excinfo.value.response
    assert error["Error"]["Code"] == "ThrottlingException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "MaxConcurrency" in error["Error"]["Message"]


def test_killed_worker_costs_one_request(server: ColdbrewServer, runtime: Any, scripted: str) -> None:
    body, _ = invoke_json(runtime, scripted, {"rows": ROWS.tolist()})
    victim = body["pid"]
    with ThreadPoolExecutor(1) as pool:
        doomed = pool.submit(invoke_json, runtime, scripted, {"rows": ROWS.tolist(), "sleep": 5})
        time.sleep(0.5)
        psutil.Process(victim).kill()
        with pytest.raises(ClientError) as excinfo:
            doomed.result()
    assert excinfo.value.response["Error"]["Code"] == "ModelError"
    assert "exited" in excinfo.value.response["Error"]["Message"]
    body, _ = invoke_json(runtime, scripted, {"rows": ROWS.tolist()})
    assert body["pid"] != victim
    assert server.process is not None and server.process.poll() is None


def test_memory_limit_stops_the_worker(runtime: Any, scripted: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        invoke_json(runtime, scripted, {"rows": ROWS.tolist(), "hog_mb": 1400})
    message = excinfo.value.response["Error"]["Message"]
    assert "more than its memory size of 1024 MB" in message
    body, _ = invoke_json(runtime, scripted, {"rows": ROWS.tolist()})
    assert body["predictions"]


def test_model_that_fails_to_load_fails_the_endpoint(sm: Any, runtime: Any, scripted_archive: Path) -> None:
    deploy_serverless(
        sm, "noload", scripted_archive.as_uri(), environment={"FAIL_TO_LOAD": "weights are corrupt"}
    )
    described = wait_for_status(sm, "noload", "Failed")
    assert "weights are corrupt" in described["FailureReason"]
    with pytest.raises(runtime.exceptions.ValidationError) as excinfo:
        runtime.invoke_endpoint(EndpointName="noload", Body=b"{}", ContentType="application/json")
    assert "Failed" in excinfo.value.response["Error"]["Message"]


def test_scale_to_zero_and_back(
    server: ColdbrewServer, sm: Any, runtime: Any, scripted_archive: Path
) -> None:
    before = worker_pids(server)
    deploy_serverless(sm, "zero", scripted_archive.as_uri(), environment={"COLDBREW_IDLE_TIMEOUT_S": "1"})
    wait_for_status(sm, "zero", "InService")
    # The worker that passed the load check stays as the first warm environment, until the
    # keep-alive releases it: the first invocation is not a second cold start.
    checked = worker_pids(server) - before
    assert len(checked) <= 1
    body, _ = invoke_json(runtime, "zero", {"rows": ROWS.tolist()})
    assert body["pid"] in worker_pids(server)
    if checked:
        assert body["pid"] in checked
    deadline = time.monotonic() + 10
    while body["pid"] in worker_pids(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker_pids(server) - before == set()  # scaled to zero
    deadline = time.monotonic() + 10
    while body["pid"] in worker_pids(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert body["pid"] not in worker_pids(server)
    again, _ = invoke_json(runtime, "zero", {"rows": ROWS.tolist()})
    assert again["pid"] != body["pid"]
    assert again["predictions"] == body["predictions"]


def test_provisioned_concurrency_and_instances_stay_warm(
    server: ColdbrewServer, sm: Any, runtime: Any, scripted_archive: Path
) -> None:
    before = worker_pids(server)
    deploy_serverless(
        sm,
        "warm",
        scripted_archive.as_uri(),
        max_concurrency=3,
        provisioned=2,
        environment={"COLDBREW_IDLE_TIMEOUT_S": "0.5"},
    )
    wait_for_status(sm, "warm", "InService")
    warm = worker_pids(server) - before
    assert len(warm) == 2
    time.sleep(1.5)
    assert worker_pids(server) - before == warm
    body, _ = invoke_json(runtime, "warm", {"rows": ROWS.tolist()})
    assert body["pid"] in warm
    sm.delete_endpoint(EndpointName="warm")
    sm.get_waiter("endpoint_deleted").wait(
        EndpointName="warm", WaiterConfig={"Delay": 0.1, "MaxAttempts": 300}
    )
    deadline = time.monotonic() + 10
    while worker_pids(server) & warm and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not worker_pids(server) & warm


def test_weighted_variants_and_target_variant(sm: Any, runtime: Any, model_archive: tuple[Path, Any]) -> None:
    sm.create_model(ModelName="two", PrimaryContainer={"ModelDataUrl": model_archive[0].as_uri()})
    sm.create_endpoint_config(
        EndpointConfigName="two-variants",
        ProductionVariants=[
            {
                "VariantName": "Serverless",
                "ModelName": "two",
                "InitialVariantWeight": 1,
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2},
            },
            {
                "VariantName": "Instances",
                "ModelName": "two",
                "InitialVariantWeight": 1,
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            },
        ],
    )
    sm.create_endpoint(EndpointName="two", EndpointConfigName="two-variants")
    wait_for_status(sm, "two", "InService")
    row = ",".join(map(str, ROWS[0]))
    seen = {
        runtime.invoke_endpoint(EndpointName="two", Body=row, ContentType="text/csv")[
            "InvokedProductionVariant"
        ]
        for _ in range(40)
    }
    assert seen == {"Serverless", "Instances"}
    for target in ("Serverless", "Instances"):
        response = runtime.invoke_endpoint(
            EndpointName="two", Body=row, ContentType="text/csv", TargetVariant=target
        )
        assert response["InvokedProductionVariant"] == target
    # The error names the endpoint, not its config (they were once confused).
    with pytest.raises(ClientError) as excinfo:
        runtime.invoke_endpoint(EndpointName="two", Body=row, ContentType="text/csv", TargetVariant="Nope")
    assert excinfo.value.response["Error"]["Message"] == (
        "The variant Nope is not present in endpoint two; its variants are Instances, Serverless."
    )
    sm.update_endpoint_weights_and_capacities(
        EndpointName="two", DesiredWeightsAndCapacities=[{"VariantName": "Serverless", "DesiredWeight": 0.0}]
    )
    wait_for_status(sm, "two", "InService")
    seen = {
        runtime.invoke_endpoint(EndpointName="two", Body=row, ContentType="text/csv")[
            "InvokedProductionVariant"
        ]
        for _ in range(20)
    }
    assert seen == {"Instances"}
    # Its instance holds 8 GB of the machine's memory budget: give it back for the next tests.
    sm.delete_endpoint(EndpointName="two")
    sm.get_waiter("endpoint_deleted").wait(
        EndpointName="two", WaiterConfig={"Delay": 0.2, "MaxAttempts": 300}
    )


def test_update_under_load_fails_no_request(sm: Any, runtime: Any, model_archive: tuple[Path, Any]) -> None:
    deploy_serverless(sm, "rolling", model_archive[0].as_uri(), max_concurrency=4)
    wait_for_status(sm, "rolling", "InService")
    sm.create_endpoint_config(
        EndpointConfigName="rolling-v2",
        ProductionVariants=[
            {
                "VariantName": "Green",
                "ModelName": "rolling",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    stop = threading.Event()
    outcomes: list[str] = []
    row = ",".join(map(str, ROWS[0]))

    def hammer() -> None:
        while not stop.is_set():
            try:
                variant = runtime.invoke_endpoint(EndpointName="rolling", Body=row, ContentType="text/csv")[
                    "InvokedProductionVariant"
                ]
                outcomes.append(variant)
            except ClientError as exc:
                outcomes.append("error: " + str(exc))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        sm.update_endpoint(EndpointName="rolling", EndpointConfigName="rolling-v2")
        wait_for_status(sm, "rolling", "InService")
        deadline = time.monotonic() + 10
        while "Green" not in outcomes[-5:] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    errors = [o for o in outcomes if o.startswith("error")]
    assert errors == []
    assert "AllTraffic" in outcomes and "Green" in outcomes
    assert outcomes[-1] == "Green"


MMS_CONTEXT_HANDLER = """
import json


def model_fn(model_dir, context):
    return {"dir": context.system_properties["model_dir"]}


def transform_fn(model, body, content_type, accept, context):
    # Written against the model server SageMaker's containers run (multi-model-server/TorchServe).
    properties = context.request_processor[0].get_request_properties()
    attributes = context.get_request_header(0, "X-Amzn-SageMaker-Custom-Attributes")
    if attributes == "fail":
        context.set_http_response_status(code=418, phrase="teapot", idx=0)
        return json.dumps({"message": "no coffee"})
    context.set_response_header(0, "X-Amzn-SageMaker-Custom-Attributes", "seen=" + attributes)
    context.set_response_content_type(0, "application/vnd.example+json")
    return json.dumps({
        "server": context.system_properties["server_name"],
        "same_dir": model["dir"] == context.system_properties["model_dir"],
        "content_type": properties.get("content-type"),
    })
"""


def test_handlers_written_for_the_model_servers_context_run_unchanged(
    sm: Any, runtime: Any, tmp_path: Path
) -> None:
    archive = tmp_path / "mms.tar.gz"
    archive.write_bytes(tar_gz({"code/inference.py": MMS_CONTEXT_HANDLER.encode()}))
    deploy_serverless(sm, "mms-context", archive.as_uri())
    wait_for_status(sm, "mms-context", "InService")
    response = runtime.invoke_endpoint(
        EndpointName="mms-context", Body=b"{}", ContentType="application/json", CustomAttributes="k=v"
    )
    assert response["ContentType"] == "application/vnd.example+json"
    assert response["CustomAttributes"] == "seen=k=v"
    assert json.loads(response["Body"].read()) == {
        "server": "coldbrew",
        "same_dir": True,
        "content_type": "application/json",
    }
    with pytest.raises(runtime.exceptions.ModelError) as excinfo:
        runtime.invoke_endpoint(
            EndpointName="mms-context", Body=b"{}", ContentType="application/json", CustomAttributes="fail"
        )
    error = excinfo.value.response
    assert error["OriginalStatusCode"] == 418
    assert "no coffee" in error["Error"]["Message"]
