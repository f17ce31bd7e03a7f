"""Model data and source directories from the embedded S3: uploaded with boto3 (AWS_ENDPOINT_URL
only), deployed with CreateModel's ModelDataUrl, served."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import boto3
import joblib
import numpy as np
from sklearn.datasets import load_diabetes

from tests.support import ColdbrewServer, deploy_serverless, sklearn_archive, tar_gz, wait_for_status

SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


def test_models_deployed_from_the_embedded_store_serve(
    server: ColdbrewServer, s3: Any, user_env: dict[str, str], tmp_path: Path
) -> None:
    archive, model = sklearn_archive(tmp_path / "model.tar.gz")
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(archive), "models", "rf/model.tar.gz")
    pickled = io.BytesIO()
    joblib.dump(model, pickled)
    s3.put_object(Bucket="models", Key="rf-files/model.joblib", Body=pickled.getvalue())
    # A source directory as the SageMaker SDK uploads one: its program doubles the predictions.
    program = "def predict_fn(data, model):\n    return model.predict(data) * 2\n"
    s3.put_object(
        Bucket="models", Key="job/source/sourcedir.tar.gz", Body=tar_gz({"serve.py": program.encode()})
    )

    sm, runtime = boto3.client("sagemaker"), boto3.client("sagemaker-runtime")
    deploy_serverless(sm, "from-s3", "s3://models/rf/model.tar.gz")
    sm.create_model(
        ModelName="from-prefix",
        PrimaryContainer={"ModelDataSource": {"S3DataSource": {
            "S3Uri": "s3://models/rf-files/", "S3DataType": "S3Prefix", "CompressionType": "None"}}},
    )  # fmt: skip
    _endpoint(sm, "from-prefix")
    sm.create_model(
        ModelName="with-code",
        PrimaryContainer={
            "Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://models/rf/model.tar.gz",
            "Environment": {"SAGEMAKER_PROGRAM": "serve.py",
                            "SAGEMAKER_SUBMIT_DIRECTORY": "s3://models/job/source/sourcedir.tar.gz"},
        },
    )  # fmt: skip
    _endpoint(sm, "with-code")
    deploy_serverless(sm, "missing", "s3://models/nope/model.tar.gz")

    rows = load_diabetes(return_X_y=True)[0][:3]
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
    for name, factor in (("from-s3", 1), ("from-prefix", 1), ("with-code", 2)):
        wait_for_status(sm, name, "InService")
        answer = runtime.invoke_endpoint(
            EndpointName=name, Body=body, ContentType="text/csv", Accept="application/json"
        )
        np.testing.assert_allclose(json.loads(answer["Body"].read()), model.predict(rows) * factor)
    failed = wait_for_status(sm, "missing", "Failed")
    assert "s3://models/nope/model.tar.gz" in failed["FailureReason"]
    assert "the object does not exist" in failed["FailureReason"]


def _endpoint(sm: Any, name: str) -> None:
    variant = {"VariantName": "AllTraffic", "ModelName": name,
               "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1}}  # fmt: skip
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
