"""A server with a bucket for capture files, and helpers to deploy capturing endpoints and read
what they captured."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import ColdbrewServer, wait_for_status

BUCKET = "capture"
ROW = ",".join(["0.01"] * 10)


def capture_config(prefix: str, percentage: int = 100, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "EnableCapture": True,
        "InitialSamplingPercentage": percentage,
        "DestinationS3Uri": f"s3://{BUCKET}/{prefix}",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {
            "CsvContentTypes": ["text/csv"],
            "JsonContentTypes": ["application/json"],
        },
    }
    config.update(overrides)
    return {k: v for k, v in config.items() if v is not None}


def create_config(
    sm: Any, name: str, model: str, capture: dict[str, Any] | None, instance: bool = False
) -> None:
    variant: dict[str, Any] = {"VariantName": "AllTraffic", "ModelName": model}
    if instance:
        variant.update(InstanceType="ml.m5.large", InitialInstanceCount=1)
    else:
        variant["ServerlessConfig"] = {"MemorySizeInMB": 1024, "MaxConcurrency": 2}
    request: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": [variant]}
    if capture is not None:
        request["DataCaptureConfig"] = capture
    sm.create_endpoint_config(**request)


def deploy(
    sm: Any, name: str, archive: Path, capture: dict[str, Any] | None, instance: bool = False
) -> dict[str, Any]:
    """Model, config ``<name>-config`` and endpoint ``name``, InService; its description."""
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": "coldbrew/sklearn", "ModelDataUrl": archive.as_uri()},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew",
    )
    create_config(sm, f"{name}-config", name, capture, instance)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    return wait_for_status(sm, name, "InService", timeout=120)


def captured(s3: Any, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """Every record under ``prefix`` of the bucket, with the key of its file."""
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            found += [(item["Key"], json.loads(line)) for line in body.splitlines()]
    return found


def wait_for_records(
    s3: Any, prefix: str, count: int, timeout: float = 60.0
) -> list[tuple[str, dict[str, Any]]]:
    """At least ``count`` records under ``prefix``: they are written within about a second; the
    wait is generous for a loaded machine."""
    deadline = time.monotonic() + timeout
    while True:
        records = captured(s3, prefix)
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


@pytest.fixture(scope="module")
def s3(server: ColdbrewServer) -> Any:
    client = server.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def runtime(server: ColdbrewServer) -> Any:
    return server.client("sagemaker-runtime")
