"""Model data from S3 through the real server, with moto's standalone server as the S3 stand-in."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes

from tests.support import ColdbrewServer, wait_for_status

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory, moto_url: str) -> Iterator[ColdbrewServer]:
    env = {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL_S3": moto_url,
        "COLDBREW_S3": "external",  # moto stands in for an S3 the user runs
        "AWS_CONFIG_FILE": str(tmp_path_factory.mktemp("aws") / "none"),
    }
    server = ColdbrewServer(tmp_path_factory.mktemp("s3") / "data", env=env).start()
    yield server
    server.stop()


def test_s3_archive_and_prefix(
    s3_server: ColdbrewServer, moto_url: str, model_archive: tuple[Path, Any]
) -> None:
    archive, model = model_archive
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="rf/model.tar.gz", Body=archive.read_bytes())
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    s3.put_object(Bucket="models", Key="rf-files/model.joblib", Body=buffer.getvalue())

    sm = s3_server.client()
    runtime = s3_server.client("sagemaker-runtime")
    sm.create_model(ModelName="from-tar", PrimaryContainer={"ModelDataUrl": "s3://models/rf/model.tar.gz"})
    sm.create_model(
        ModelName="from-prefix",
        PrimaryContainer={
            "ModelDataSource": {
                "S3DataSource": {
                    "S3Uri": "s3://models/rf-files/",
                    "S3DataType": "S3Prefix",
                    "CompressionType": "None",
                }
            }
        },
    )
    sm.create_model(ModelName="missing", PrimaryContainer={"ModelDataUrl": "s3://models/nope/model.tar.gz"})
    for name in ("from-tar", "from-prefix", "missing"):
        sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
                }
            ],
        )
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)

    rows = load_diabetes(return_X_y=True)[0][:3]
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
    for name in ("from-tar", "from-prefix"):
        wait_for_status(sm, name, "InService")
        response = runtime.invoke_endpoint(
            EndpointName=name, Body=body, ContentType="text/csv", Accept="text/csv"
        )
        got = [float(line) for line in response["Body"].read().decode().split()]
        np.testing.assert_allclose(got, model.predict(rows))
    failed = wait_for_status(sm, "missing", "Failed")
    assert "s3://models/nope/model.tar.gz" in failed["FailureReason"]


def test_unreachable_storage_fails_the_endpoint(tmp_path: Path) -> None:
    env = {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:1",
        "COLDBREW_S3": "external",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
    }
    server = ColdbrewServer(tmp_path / "data", env=env).start()
    try:
        sm = server.client()
        sm.create_model(ModelName="far", PrimaryContainer={"ModelDataUrl": "s3://models/model.tar.gz"})
        sm.create_endpoint_config(
            EndpointConfigName="far",
            ProductionVariants=[
                {
                    "VariantName": "v",
                    "ModelName": "far",
                    "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
                }
            ],
        )
        sm.create_endpoint(EndpointName="far", EndpointConfigName="far")
        failed = wait_for_status(sm, "far", "Failed")
        assert "Could not reach S3" in failed["FailureReason"]
        assert server.process is not None and server.process.poll() is None
    finally:
        server.stop()
