"""SageMaker Python SDK 3.x asynchronous inference against coldbrew, the two ways 3.x offers it:

- ``ModelBuilder(..., instance_type=...)``: ``build()`` then ``deploy(inference_config=
  AsyncInferenceConfig(output_path=..., failure_path=...))`` (``sagemaker.core.inference_config``),
  which returns a ``sagemaker.core.resources.Endpoint``;
- the sagemaker-core resource classes: ``EndpointConfig.create(async_inference_config=
  AsyncInferenceConfig(output_config=AsyncInferenceOutputConfig(...)))`` (``sagemaker.core.shapes``).

Either way the request is ``Endpoint.invoke_async(input_location=..., content_type=...)`` with the
input uploaded to S3 first (3.x has no helper that uploads and polls: the 2.x ``AsyncPredictor``
it still ships under ``sagemaker.serve`` is deprecated for ``ModelBuilder.deploy``), and its
``InvokeEndpointAsyncOutput`` names the output and failure objects, polled with boto3's S3
``object_exists`` waiter as a user would. The client guard of :mod:`tests.sdk.test_sdk3` (loopback
only, telemetry off) runs around every script.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes

from tests.sdk.conftest import BUCKET, SDK, s3_client
from tests.sdk.test_sdk3 import CLIENT, MODEL_BUILDER, SKLEARN_IMAGE, _csv, _names
from tests.support import ColdbrewServer, sklearn_archive

POLL = """
import boto3
s3 = boto3.client("s3")


def outcome(reply):
    \"\"\"Wait for the output or the failure object of an InvokeEndpointAsync reply; read it.\"\"\"
    for _ in range(60):
        for kind, url in (("output", reply.output_location), ("failure", reply.failure_location)):
            bucket, key = url[len("s3://"):].split("/", 1)
            try:
                body = s3.get_object(Bucket=bucket, Key=key)
            except s3.exceptions.NoSuchKey:
                continue
            return {"kind": kind, "content_type": body["ContentType"], "body": body["Body"].read().decode()}
        time.sleep(0.5)
    raise TimeoutError(reply.output_location)


def put(key, text, content_type):
    s3.put_object(Bucket=BUCKET, Key=key, Body=text.encode(), ContentType=content_type)
    return f"s3://{BUCKET}/{key}"
"""


@pytest.fixture(scope="module")
def forest(server: ColdbrewServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any, np.ndarray]:
    archive, model = sklearn_archive(tmp_path_factory.mktemp("forest-async") / "model.tar.gz")
    s3_client(server).upload_file(str(archive), BUCKET, "sdk3-async/forest/model.tar.gz")
    rows = load_diabetes(return_X_y=True)[0][:3]
    return f"s3://{BUCKET}/sdk3-async/forest/model.tar.gz", model, rows


@pytest.fixture
def sm(sdk3: SDK) -> Any:
    return sdk3.server.client()


def test_model_builder_deploy_async_and_invoke_async(
    sdk3: SDK, sm: Any, forest: tuple[str, Any, np.ndarray]
) -> None:
    url, model, rows = forest
    result = sdk3.run(
        CLIENT
        + MODEL_BUILDER
        + POLL
        + f"""
from sagemaker.core.inference_config import AsyncInferenceConfig

builder = ModelBuilder(s3_model_data_url={url!r}, image_uri={SKLEARN_IMAGE!r}, role_arn=ROLE,
                       instance_type="ml.m5.large", model_path=os.path.abspath("model-builder"))
model = builder.build(model_name="sdk3-async-builder")
endpoint = builder.deploy(
    endpoint_name="sdk3-async-builder",
    inference_config=AsyncInferenceConfig(output_path=f"s3://{{BUCKET}}/sdk3-async/out",
                                          failure_path=f"s3://{{BUCKET}}/sdk3-async/failures"),
    wait=False,
)
endpoint.wait_for_status("InService", poll=1)
config = EndpointConfig.get(endpoint.endpoint_config_name)
described = {{
    "output": config.async_inference_config.output_config.s3_output_path,
    "failure": config.async_inference_config.output_config.s3_failure_path,
    "instance_type": config.production_variants[0].instance_type,
}}

reply = endpoint.invoke_async(input_location=put("sdk3-async/in/rows.csv", {_csv(rows)!r}, "text/csv"),
                              content_type="text/csv", accept="application/json", inference_id="rows")
answered = outcome(reply)
locations = {{"inference_id": reply.inference_id, "output": reply.output_location,
              "failure": reply.failure_location}}
bad = endpoint.invoke_async(input_location=put("sdk3-async/in/bad.csv", "1.0,2.0", "text/csv"),
                            content_type="text/csv")
failed = outcome(bad)
try:
    endpoint.invoke(body={_csv(rows)!r}, content_type="text/csv")
    realtime = None
except Exception as error:
    realtime = type(error).__name__ + ": " + str(error)

endpoint.delete()
endpoint.wait_for_delete(poll=1)
config.delete()
model.delete()
emit({{"answered": answered, "failed": failed, "locations": locations, "described": described,
       "realtime": realtime, "reached": REACHED}})
"""
    )
    assert result["reached"] == []
    assert result["described"] == {
        "output": f"s3://{BUCKET}/sdk3-async/out",
        "failure": f"s3://{BUCKET}/sdk3-async/failures",
        "instance_type": "ml.m5.large",
    }
    assert result["answered"]["kind"] == "output"
    assert result["answered"]["content_type"] == "application/json"
    np.testing.assert_allclose(json.loads(result["answered"]["body"]), model.predict(rows), rtol=1e-6)
    locations = result["locations"]
    assert locations["inference_id"] == "rows"
    assert locations["output"].startswith(f"s3://{BUCKET}/sdk3-async/out/")
    assert locations["failure"].startswith(f"s3://{BUCKET}/sdk3-async/failures/")
    assert result["failed"]["kind"] == "failure"
    # The model's own error response, as SageMaker stores it at the FailureLocation.
    assert result["failed"]["content_type"] == "application/json"
    assert "each row must have 10 features, got 2" in json.loads(result["failed"]["body"])["message"]
    assert "ValidationError" in (result["realtime"] or "")
    names = _names(sm)
    assert "sdk3-async-builder" not in names["models"] + names["configs"] + names["endpoints"]


def test_core_resources_async_endpoint_config_and_invoke_async(
    sdk3: SDK, sm: Any, forest: tuple[str, Any, np.ndarray]
) -> None:
    url, model, rows = forest
    result = sdk3.run(
        CLIENT
        + POLL
        + f"""
from sagemaker.core.resources import Endpoint, EndpointConfig, Model
from sagemaker.core.shapes import (AsyncInferenceClientConfig, AsyncInferenceConfig,
                                   AsyncInferenceOutputConfig, ContainerDefinition, ProductionVariant)

model = Model.create(
    model_name="sdk3-async-core",
    primary_container=ContainerDefinition(image={SKLEARN_IMAGE!r}, model_data_url={url!r}),
    execution_role_arn=ROLE,
)
config = EndpointConfig.create(
    endpoint_config_name="sdk3-async-core",
    production_variants=[ProductionVariant(variant_name="AllTraffic", model_name="sdk3-async-core",
                                           instance_type="ml.m5.large", initial_instance_count=1)],
    async_inference_config=AsyncInferenceConfig(
        output_config=AsyncInferenceOutputConfig(s3_output_path=f"s3://{{BUCKET}}/sdk3-async-core/out"),
        client_config=AsyncInferenceClientConfig(max_concurrent_invocations_per_instance=2),
    ),
)
endpoint = Endpoint.create(endpoint_name="sdk3-async-core", endpoint_config_name="sdk3-async-core")
endpoint.wait_for_status("InService", poll=1)
described = EndpointConfig.get("sdk3-async-core").async_inference_config
reply = endpoint.invoke_async(
    input_location=put("sdk3-async-core/in/rows.json", json.dumps({rows.tolist()!r}), "application/json"),
    content_type="application/json", accept="text/csv", request_ttl_seconds=600,
    invocation_timeout_seconds=60,
)
answered = outcome(reply)
endpoint.delete()
endpoint.wait_for_delete(poll=1)
config.delete()
model.delete()
emit({{"answered": answered, "output": reply.output_location, "failure": reply.failure_location,
       "inference_id": reply.inference_id,
       "described": {{"output": described.output_config.s3_output_path,
                      "concurrency": described.client_config.max_concurrent_invocations_per_instance}},
       "reached": REACHED}})
"""
    )
    assert result["reached"] == []
    assert result["described"] == {"output": f"s3://{BUCKET}/sdk3-async-core/out", "concurrency": 2}
    assert result["answered"]["kind"] == "output"
    assert result["answered"]["content_type"] == "text/csv"
    got = np.asarray([float(line) for line in result["answered"]["body"].split()])
    np.testing.assert_allclose(got, model.predict(rows), rtol=1e-6)
    # No S3FailurePath: failures go under the output path, as SageMaker does.
    assert result["output"] == f"s3://{BUCKET}/sdk3-async-core/out/{result['inference_id']}.out"
    assert result["failure"].startswith(f"s3://{BUCKET}/sdk3-async-core/out/")
    assert result["failure"].endswith("-error.out")
    names = _names(sm)
    assert "sdk3-async-core" not in names["models"] + names["configs"] + names["endpoints"]
