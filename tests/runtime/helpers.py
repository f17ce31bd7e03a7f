"""Deploying model archives built inside a test, and invoking them with a real boto3 client."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.support import tar_gz, wait_for_status

XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
SKLEARN_IMAGE = "246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
PYTORCH_IMAGE = "763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"


def create_endpoint(
    sm: Any,
    directory: Path,
    name: str,
    files: dict[str, bytes],
    image: str | None = None,
    environment: dict[str, str] | None = None,
) -> None:
    """Create (not wait for) a serverless endpoint serving an archive of ``files``."""
    archive = directory / f"{name}.tar.gz"
    archive.write_bytes(tar_gz(files))
    container: dict[str, Any] = {"ModelDataUrl": archive.as_uri()}
    if image:
        container["Image"] = image
    if environment:
        container["Environment"] = environment
    sm.create_model(
        ModelName=name, PrimaryContainer=container, ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew"
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 2},
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


def wait_all(sm: Any, names: list[str], status: str = "InService") -> dict[str, dict[str, Any]]:
    # Created together and waited for together: the loads run concurrently.
    return {name: wait_for_status(sm, name, status, timeout=120) for name in names}


def invoke(
    runtime: Any, name: str, body: bytes | str, content_type: str, accept: str | None = None
) -> tuple[bytes, str]:
    """The response body and its Content-Type."""
    kwargs = {"Accept": accept} if accept else {}
    response = runtime.invoke_endpoint(EndpointName=name, Body=body, ContentType=content_type, **kwargs)
    return response["Body"].read(), response["ContentType"]


def model_error(
    runtime: Any, name: str, body: bytes | str, content_type: str, accept: str | None = None
) -> tuple[int, str]:
    """Invoke expecting SageMaker's ModelError (424); the worker's status and the message."""
    with pytest.raises(ClientError) as excinfo:
        invoke(runtime, name, body, content_type, accept)
    error = excinfo.value.response
    assert error["Error"]["Code"] == "ModelError", error
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    return int(error["OriginalStatusCode"]), str(error["Error"]["Message"])


# --- bodies ---------------------------------------------------------------------------------------


def csv_body(rows: np.ndarray) -> str:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows)


def jsonlines_body(rows: np.ndarray, key: str | None = None) -> str:
    return "\n".join(json.dumps({key: row} if key else row) for row in rows.tolist())


def npy_body(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def from_npy(body: bytes) -> np.ndarray:
    return np.load(io.BytesIO(body), allow_pickle=False)


def from_csv(body: bytes) -> np.ndarray:
    return np.array([[float(v) for v in line.split(",")] for line in body.decode().splitlines()])


def from_jsonlines(body: bytes) -> list[Any]:
    return [json.loads(line) for line in body.decode().splitlines()]


def file_bytes(save: Any, name: str, directory: Path) -> bytes:
    """What ``save(path)`` writes to a file called ``name`` (the extension picks some formats)."""
    path = directory / name
    save(str(path))
    return path.read_bytes()
