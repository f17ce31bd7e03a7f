"""Data capture on a real server, driven by boto3: the records' format and encodings, the key
layout, sampling, capture turned on and off by UpdateEndpoint, DescribeEndpoint's report, on
serverless and instance variants."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.capture.conftest import (
    BUCKET,
    ROW,
    capture_config,
    captured,
    create_config,
    deploy,
    wait_for_records,
)
from tests.support import ColdbrewServer, wait_for_status

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def npy(array: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def sentinel(sm: Any, runtime: Any, s3: Any, archive: Path) -> None:
    """Capture one record through an endpoint that captures all and wait for it: the writer's
    buffer is first in, first out, so every invocation answered before it was written by then."""
    if not any(e["EndpointName"] == "sentinel" for e in sm.list_endpoints()["Endpoints"]):
        deploy(sm, "sentinel", archive, capture_config("sentinel"))
    before = len(captured(s3, "sentinel/"))
    runtime.invoke_endpoint(EndpointName="sentinel", Body=ROW, ContentType="text/csv")
    assert len(wait_for_records(s3, "sentinel/", before + 1)) == before + 1


def test_records_keys_and_encodings(
    server: ColdbrewServer, sm: Any, runtime: Any, s3: Any, model_archive: tuple[Path, Any]
) -> None:
    capture = capture_config("formats", KmsKeyId="alias/capture")
    described = deploy(sm, "formats", model_archive[0], capture)
    assert described["DataCaptureConfig"] == {
        "EnableCapture": True,
        "CaptureStatus": "Started",
        "CurrentSamplingPercentage": 100,
        "DestinationS3Uri": f"s3://{BUCKET}/formats",
        "KmsKeyId": "alias/capture",
    }
    assert "DataCaptureConfig.KmsKeyId is accepted but not applied" in server.log()
    started = datetime.now(UTC).replace(microsecond=0)
    csv = runtime.invoke_endpoint(
        EndpointName="formats", Body=ROW, ContentType="text/csv", Accept="text/csv", InferenceId="csv-1"
    )
    json_body = "[[" + ",".join(["0.02"] * 10) + "]]"
    as_json = runtime.invoke_endpoint(
        EndpointName="formats", Body=json_body, ContentType="application/json", Accept="application/json"
    )
    array = npy(np.full((1, 10), 0.03))
    binary = runtime.invoke_endpoint(
        EndpointName="formats", Body=array, ContentType="application/x-npy", Accept="application/x-npy"
    )
    outputs = [r["Body"].read() for r in (csv, as_json, binary)]
    records = wait_for_records(s3, "formats/", 3)
    assert len(records) == 3
    for key, record in records:
        assert re.fullmatch(
            rf"formats/formats/AllTraffic/\d{{4}}/\d\d/\d\d/\d\d/\d\d-\d\d-\d{{3}}-{UUID}\.jsonl", key
        )
        assert record["eventVersion"] == "0"
        at = datetime.strptime(record["eventMetadata"]["inferenceTime"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=UTC
        )
        assert started <= at <= datetime.now(UTC)
        assert key.split("/")[3:7] == at.strftime("%Y/%m/%d/%H").split("/")
        assert re.fullmatch(UUID, record["eventMetadata"]["eventId"])
    assert len({r["eventMetadata"]["eventId"] for _, r in records}) == 3
    by_input = {r["captureData"]["endpointInput"]["observedContentType"]: r for _, r in records}
    first = by_input["text/csv"]
    assert first["eventMetadata"]["inferenceId"] == "csv-1"
    assert first["captureData"]["endpointInput"] == {
        "observedContentType": "text/csv", "mode": "INPUT", "data": ROW, "encoding": "CSV",
    }  # fmt: skip
    output = first["captureData"]["endpointOutput"]
    assert output["mode"] == "OUTPUT" and output["encoding"] == "CSV"
    assert output["observedContentType"] == csv["ContentType"] and output["data"] == outputs[0].decode()
    second = by_input["application/json"]
    assert "inferenceId" not in second["eventMetadata"]
    assert second["captureData"]["endpointInput"]["data"] == json_body
    assert second["captureData"]["endpointInput"]["encoding"] == "JSON"
    assert second["captureData"]["endpointOutput"]["encoding"] == "JSON"
    assert second["captureData"]["endpointOutput"]["data"] == outputs[1].decode()
    third = by_input["application/x-npy"]["captureData"]
    assert third["endpointInput"]["encoding"] == "BASE64"
    assert base64.b64decode(third["endpointInput"]["data"]) == array
    assert third["endpointOutput"] == {
        "observedContentType": "application/x-npy", "mode": "OUTPUT",
        "data": base64.b64encode(outputs[2]).decode(), "encoding": "BASE64",
    }  # fmt: skip


def test_instance_variant_input_only_without_content_type_header(
    sm: Any, runtime: Any, s3: Any, model_archive: tuple[Path, Any]
) -> None:
    capture = capture_config(
        "instances/", CaptureOptions=[{"CaptureMode": "Input"}], CaptureContentTypeHeader=None
    )
    described = deploy(sm, "on-instances", model_archive[0], capture, instance=True)
    assert described["DataCaptureConfig"]["CaptureStatus"] == "Started"
    assert "KmsKeyId" not in described["DataCaptureConfig"]
    for _ in range(4):
        runtime.invoke_endpoint(EndpointName="on-instances", Body=ROW, ContentType="text/csv")
    records = wait_for_records(s3, "instances/", 4)
    assert len(records) == 4
    for key, record in records:
        assert key.startswith("instances/on-instances/AllTraffic/")
        # Only the input; with no CaptureContentTypeHeader, everything is base64 (as on SageMaker).
        assert list(record["captureData"]) == ["endpointInput"]
        assert record["captureData"]["endpointInput"]["encoding"] == "BASE64"
        assert base64.b64decode(record["captureData"]["endpointInput"]["data"]).decode() == ROW


def test_sampling(sm: Any, runtime: Any, s3: Any, model_archive: tuple[Path, Any]) -> None:
    deploy(sm, "none-sampled", model_archive[0], capture_config("none", percentage=0))
    deploy(sm, "half-sampled", model_archive[0], capture_config("half", percentage=50))
    for _ in range(20):
        runtime.invoke_endpoint(EndpointName="none-sampled", Body=ROW, ContentType="text/csv")
    for _ in range(200):
        runtime.invoke_endpoint(EndpointName="half-sampled", Body=ROW, ContentType="text/csv")
    sentinel(sm, runtime, s3, model_archive[0])
    assert captured(s3, "none/") == []
    half = len(captured(s3, "half/"))
    assert 50 <= half <= 150, half  # binomial(200, 0.5): more than 7 standard deviations either way


def test_update_endpoint_turns_capture_on_and_off(
    sm: Any, runtime: Any, s3: Any, model_archive: tuple[Path, Any]
) -> None:
    described = deploy(sm, "toggled", model_archive[0], None)
    assert "DataCaptureConfig" not in described
    runtime.invoke_endpoint(EndpointName="toggled", Body=ROW, ContentType="text/csv")

    create_config(sm, "toggled-on", "toggled", capture_config("toggled"))
    sm.update_endpoint(EndpointName="toggled", EndpointConfigName="toggled-on")
    described = wait_for_status(sm, "toggled", "InService", timeout=120)
    assert described["DataCaptureConfig"]["CaptureStatus"] == "Started"
    for i in range(3):
        runtime.invoke_endpoint(
            EndpointName="toggled", Body=ROW, ContentType="text/csv", InferenceId=f"on-{i}"
        )
    assert len(wait_for_records(s3, "toggled/", 3)) == 3

    create_config(sm, "toggled-off", "toggled", capture_config("toggled", EnableCapture=False))
    sm.update_endpoint(EndpointName="toggled", EndpointConfigName="toggled-off")
    described = wait_for_status(sm, "toggled", "InService", timeout=120)
    assert described["DataCaptureConfig"]["EnableCapture"] is False
    assert described["DataCaptureConfig"]["CaptureStatus"] == "Stopped"
    for _ in range(3):
        runtime.invoke_endpoint(EndpointName="toggled", Body=ROW, ContentType="text/csv")
    sentinel(sm, runtime, s3, model_archive[0])
    records = captured(s3, "toggled/")
    assert sorted(r["eventMetadata"]["inferenceId"] for _, r in records) == ["on-0", "on-1", "on-2"]


def test_validation(server: ColdbrewServer, sm: Any, model_archive: tuple[Path, Any]) -> None:
    # Client-side validation off, so the server's own checks answer.
    raw = server.client("sagemaker", parameter_validation=False)
    sm.create_model(
        ModelName="refused",
        PrimaryContainer={"Image": "coldbrew/sklearn", "ModelDataUrl": model_archive[0].as_uri()},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew",
    )
    cases = [
        capture_config("x", percentage=101),
        capture_config("x", CaptureOptions=[{"CaptureMode": "Both"}]),
        capture_config("x", CaptureOptions=[]),
        {**capture_config("x"), "DestinationS3Uri": "bucket/prefix"},
        {**capture_config("x"), "DestinationS3Uri": "https://capture.s3.amazonaws.com/x"},
        {k: v for k, v in capture_config("x").items() if k != "DestinationS3Uri"},
    ]
    for i, capture in enumerate(cases):
        with pytest.raises(ClientError) as caught:
            create_config(raw, f"refused-{i}", "refused", capture)
        assert caught.value.response["Error"]["Code"] == "ValidationException", capture


def test_inference_id_is_checked_as_invoke_endpoint_documents(
    server: ColdbrewServer, sm: Any, runtime: Any, s3: Any, model_archive: tuple[Path, Any]
) -> None:
    if not any(e["EndpointName"] == "sentinel" for e in sm.list_endpoints()["Endpoints"]):
        deploy(sm, "sentinel", model_archive[0], capture_config("sentinel"))
    url = f"{server.url}/endpoints/sentinel/invocations"
    for bad in (b"x" * 65, b"caf\xe9"):
        answer = httpx.post(
            url, content=ROW, headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Inference-Id": bad}
        )
        assert answer.status_code == 400 and answer.headers["x-amzn-errortype"] == "ValidationError", bad
        assert "inferenceId" in answer.json()["message"]
    ok = httpx.post(
        url, content=ROW, headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Inference-Id": "a b"}
    )
    assert ok.status_code == 200
