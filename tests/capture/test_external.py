"""Capture to an external S3 (``COLDBREW_S3=external``, moto standing in), and to a bucket that
does not exist: invocations are answered all the same."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.capture.conftest import BUCKET, ROW, capture_config, deploy, wait_for_records
from tests.support import ColdbrewServer

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory, moto_url: str) -> Iterator[ColdbrewServer]:
    env = {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL_S3": moto_url,
        "COLDBREW_S3": "external",
        "AWS_CONFIG_FILE": str(tmp_path_factory.mktemp("aws") / "none"),
    }
    server = ColdbrewServer(tmp_path_factory.mktemp("external") / "data", env=env).start()
    yield server
    server.stop()


def test_external_s3(external: ColdbrewServer, moto_url: str, model_archive: tuple[Path, Any]) -> None:
    s3 = boto3.client(
        "s3", endpoint_url=moto_url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    s3.create_bucket(Bucket=BUCKET)
    sm, runtime = external.client("sagemaker"), external.client("sagemaker-runtime")
    deploy(sm, "external", model_archive[0], capture_config("external"))
    for i in range(3):
        runtime.invoke_endpoint(
            EndpointName="external", Body=ROW, ContentType="text/csv", InferenceId=f"x-{i}"
        )
    records = wait_for_records(s3, "external/external/AllTraffic/", 3)
    assert sorted(r["eventMetadata"]["inferenceId"] for _, r in records) == ["x-0", "x-1", "x-2"]


def test_missing_bucket_never_fails_invocations(
    external: ColdbrewServer, model_archive: tuple[Path, Any]
) -> None:
    sm, runtime = external.client("sagemaker"), external.client("sagemaker-runtime")
    capture = {**capture_config("x"), "DestinationS3Uri": "s3://no-such-bucket/x"}
    deploy(sm, "nowhere", model_archive[0], capture)
    for _ in range(5):
        assert runtime.invoke_endpoint(EndpointName="nowhere", Body=ROW, ContentType="text/csv")[
            "Body"
        ].read()
    # Dropped and counted: on /metrics once the writer has tried.
    deadline = time.monotonic() + 60
    while True:
        text = httpx.get(f"{external.url}/metrics", timeout=10).text
        match = re.search(
            r'^coldbrew_capture_records_dropped_total\{reason="write_failed"\} (\S+)$', text, re.M
        )
        if (match and float(match.group(1)) >= 5) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert match is not None and float(match.group(1)) >= 5, text[-2000:]
