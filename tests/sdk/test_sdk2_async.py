"""SageMaker Python SDK 2.x asynchronous inference against coldbrew, as the SDK documents it
(sagemaker.readthedocs.io, "Asynchronous Inference"): ``deploy(async_inference_config=
AsyncInferenceConfig(output_path=..., failure_path=...))`` returns an ``AsyncPredictor``;
``predict_async`` (data the SDK uploads, or an object already in S3) and ``get_result`` with a
``WaiterConfig``; the blocking ``predict``; a failing request raised as the SDK's
``AsyncInferenceModelError`` from the FailureLocation.

Buckets are named: ``default_bucket=`` on the session (coldbrew has no STS to name one), and the
output and failure paths in the config.

What the SDK leaves to the caller, each found by running it:

- ``AsyncPredictor`` uploads the serialized input with the serializer's Content-Type on the
  *object*, but sends no ``ContentType`` in InvokeEndpointAsync: coldbrew then gives the model the
  input object's type. An object uploaded without a type needs ``initial_args={"ContentType": ...}``.
- It reads the failure object through the predictor's deserializer: the failure object is the
  model's own JSON error response, so the ``JSONDeserializer`` reads it and the SDK raises
  ``AsyncInferenceModelError``.
- ``_check_output_and_failure_paths`` polls the output and the failure key in two threads and
  leaves the loser polling until ``max_attempts``: the interpreter waits for it at exit, so the
  ``WaiterConfig`` here is short (1 s, 15 attempts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import Ridge

from tests.sdk.conftest import SDK

SESSION = """
import boto3, sagemaker
from sagemaker.async_inference import AsyncInferenceConfig, WaiterConfig
from sagemaker.exceptions import AsyncInferenceModelError
from sagemaker.serverless import ServerlessInferenceConfig
from sagemaker.serializers import JSONSerializer
from sagemaker.deserializers import JSONDeserializer
from sagemaker.sklearn import SKLearnModel
boto_session = boto3.Session()
session = sagemaker.Session(boto_session=boto_session, default_bucket=BUCKET)
waiter = WaiterConfig(max_attempts=15, delay=1)
as_json = {"ContentType": "application/json"}


def failure_of(predictor, **kwargs):
    try:
        predictor.predict(waiter_config=waiter, **kwargs)
    except AsyncInferenceModelError as error:
        return {"raised": "AsyncInferenceModelError", "message": str(error)}
    except Exception as error:
        return {"raised": type(error).__name__, "message": str(error)}
    return {"raised": None}
"""

INFERENCE = """
import os
import joblib
import numpy as np


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def predict_fn(data, model):
    rows = np.asarray(data, dtype=float)
    if rows.ndim != 2 or rows.shape[1] != model.n_features_in_:
        raise ValueError(f"expected rows of {model.n_features_in_} features, got shape {rows.shape}")
    return model.predict(rows)
"""


def _model(sdk2: SDK, archive: Path, prefix: str) -> str:
    """Client code that makes ``model``: the archive uploaded, the entry point under ``src``."""
    source = sdk2.workdir / "src"
    source.mkdir()
    (source / "inference.py").write_text(INFERENCE)
    return f"""
model_data = session.upload_data({str(archive)!r}, key_prefix={prefix!r})
model = SKLearnModel(model_data=model_data, role=ROLE, entry_point="inference.py", source_dir="src",
                     framework_version="1.2-1", sagemaker_session=session)
"""


def test_async_predictor_on_an_instance(sdk2: SDK, ridge: tuple[Path, Ridge, np.ndarray]) -> None:
    archive, model, rows = ridge
    result = sdk2.run(
        SESSION
        + _model(sdk2, archive, "sdk2-async-model")
        + f"""
predictor = model.deploy(
    initial_instance_count=1, instance_type="ml.m5.large", endpoint_name="sdk2-async",
    async_inference_config=AsyncInferenceConfig(output_path=f"s3://{{BUCKET}}/sdk2-async/out",
                                                failure_path=f"s3://{{BUCKET}}/sdk2-async/failures"),
    serializer=JSONSerializer(), deserializer=JSONDeserializer(), wait=False,
)
session.wait_for_endpoint("sdk2-async", poll=1)
async_config = session.sagemaker_client.describe_endpoint_config(
    EndpointConfigName="sdk2-async")["AsyncInferenceConfig"]

# The SDK uploads the data to the input_path given, invokes, and hands back a response to poll.
response = predictor.predict_async(data={rows.tolist()!r}, input_path=f"s3://{{BUCKET}}/sdk2-async/in/rows.json")
uploaded = response.get_result(waiter)
locations = {{"output": response.output_path, "failure": response.failure_path}}

# An object uploaded first (without a content type), its S3 URI passed as input_path, with an InferenceId.
session.upload_string_as_file_body(json.dumps({rows[:1].tolist()!r}), bucket=BUCKET,
                                   key="sdk2-async/in/one.json")
existing = predictor.predict_async(input_path=f"s3://{{BUCKET}}/sdk2-async/in/one.json", initial_args=as_json,
                                   inference_id="one-row").get_result(waiter)

# The blocking helper: upload (to the session's default bucket), invoke, wait.
blocking = predictor.predict(data={rows.tolist()!r}, waiter_config=waiter)
uploads = [o["Key"] for o in session.s3_client.list_objects_v2(
    Bucket=BUCKET, Prefix="async-endpoint-inputs/")["Contents"]]

# A failure, read from the FailureLocation through the JSONDeserializer: the model raising.
model_failure = failure_of(predictor, data=[[1.0, 2.0]])

predictor.delete_endpoint()
model.delete_model()
emit({{"kind": type(predictor).__name__, "uploaded": uploaded, "existing": existing, "blocking": blocking,
       "locations": locations, "uploads": uploads, "config": async_config, "model_failure": model_failure}})
"""
    )
    assert result["kind"] == "AsyncPredictor"
    assert result["config"]["OutputConfig"] == {
        "S3OutputPath": "s3://sdk-tests/sdk2-async/out",
        "S3FailurePath": "s3://sdk-tests/sdk2-async/failures",
    }
    expected = model.predict(rows)
    np.testing.assert_allclose(result["uploaded"], expected, rtol=1e-6)
    np.testing.assert_allclose(result["existing"], expected[:1], rtol=1e-6)
    np.testing.assert_allclose(result["blocking"], expected, rtol=1e-6)
    assert result["locations"]["output"].startswith("s3://sdk-tests/sdk2-async/out/")
    assert result["locations"]["output"].endswith(".out")
    assert result["locations"]["failure"].startswith("s3://sdk-tests/sdk2-async/failures/")
    assert result["locations"]["failure"].endswith("-error.out")
    assert len(result["uploads"]) == 1 and result["uploads"][0].startswith("async-endpoint-inputs/")

    assert result["model_failure"]["raised"] == "AsyncInferenceModelError"
    assert "ValueError: expected rows of 10 features, got shape (1, 2)" in result["model_failure"]["message"]


def test_async_predictor_serverless(sdk2: SDK, ridge: tuple[Path, Ridge, np.ndarray]) -> None:
    """A coldbrew extension: AsyncInferenceConfig on a serverless variant. SDK 2.x sends it as
    given (it does not refuse the combination), and the AsyncPredictor works the same way."""
    archive, model, rows = ridge
    result = sdk2.run(
        SESSION
        + _model(sdk2, archive, "sdk2-async-serverless-model")
        + f"""
predictor = model.deploy(
    serverless_inference_config=ServerlessInferenceConfig(memory_size_in_mb=2048, max_concurrency=2),
    endpoint_name="sdk2-async-serverless",
    async_inference_config=AsyncInferenceConfig(output_path=f"s3://{{BUCKET}}/sdk2-async-serverless/out"),
    serializer=JSONSerializer(), deserializer=JSONDeserializer(), wait=False,
)
session.wait_for_endpoint("sdk2-async-serverless", poll=1)
config = session.sagemaker_client.describe_endpoint_config(EndpointConfigName="sdk2-async-serverless")
response = predictor.predict_async(data={rows.tolist()!r})
prediction = response.get_result(waiter)
failure = failure_of(predictor, data=[[1.0, 2.0]])
predictor.delete_endpoint()
model.delete_model()
emit({{"kind": type(predictor).__name__, "prediction": prediction, "output": response.output_path,
       "failure_path": response.failure_path, "async": config["AsyncInferenceConfig"],
       "serverless": config["ProductionVariants"][0]["ServerlessConfig"], "failure": failure}})
"""
    )
    assert result["kind"] == "AsyncPredictor"
    assert result["serverless"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 2}
    np.testing.assert_allclose(result["prediction"], model.predict(rows), rtol=1e-6)
    # No failure_path given: the SDK makes one in the default bucket.
    failures = result["async"]["OutputConfig"]["S3FailurePath"]
    assert failures.startswith("s3://sdk-tests/async-endpoint-failures/")
    assert result["output"].startswith("s3://sdk-tests/sdk2-async-serverless/out/")
    assert result["failure_path"].startswith(failures + "/")
    assert result["failure"]["raised"] == "AsyncInferenceModelError"
    assert "ValueError: expected rows of 10 features" in result["failure"]["message"]
