"""SageMaker Python SDK 3.x (the version pinned in requirements-v3.txt: sagemaker 3.27.0, with
sagemaker-core 2.27.0 and sagemaker-serve 1.27.0) against coldbrew, deploy -> invoke -> delete with
a serverless config, in the two ways its documentation shows:

- the sagemaker-core resource classes: ``Model.create``, ``EndpointConfig.create`` with a
  ``ProductionVariantServerlessConfig``, ``Endpoint.create``, ``wait_for_status``, ``invoke``,
  ``delete``;
- ``sagemaker.serve.model_builder.ModelBuilder``: ``build()`` then ``deploy(inference_config=
  ServerlessInferenceConfig(...))``, from a model archive already in S3 and a framework image.

What the SDK needs besides coldbrew, each found by running it (and each in the README):

- sagemaker-core serializes ``memory_size_in_mb`` as ``MemorySizeInMb``, which botocore refuses
  before any request is sent (aws/sagemaker-core#225, open; the same code is in the SDK's
  sagemaker-core/src/sagemaker/core/utils/utils.py). The resource-class flow works once the key
  is added to the SDK's own table of exceptions to its snake -> Pascal case rule.
- ModelBuilder validates the execution role with IAM (``SimulatePrincipalPolicy``, ``GetRole``)
  unless ``SAGEMAKER_VALIDATE_ROLE=false``; it uploads through the session's default bucket, whose
  name it asks STS for at the regional endpoint it names itself (so ``AWS_ENDPOINT_URL_STS`` does
  not apply) unless the session is given one; ``deploy()``'s wait calls CloudWatch Logs
  ``FilterLogEvents`` for ``/aws/sagemaker/Endpoints/<name>`` before it sleeps 30 s for its first
  status check, so it needs a CloudWatch Logs endpoint that answers (coldbrew's) and is slow;
  ``deploy(wait=False)`` plus ``Endpoint.wait_for_status(..., poll=1)`` is the fast path.
- The SDK sends telemetry to ``sm-pysdk-t-<region>.s3.<region>.amazonaws.com`` unless its config
  file sets ``TelemetryOptOut``.

Every client script here runs behind a guard that refuses to resolve any host but loopback and
records what was asked for; each test asserts that nothing was.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes

from tests.sdk.conftest import BUCKET, SDK, s3_client
from tests.support import ColdbrewServer, sklearn_archive

SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"

CLIENT = """
import os, socket, time

# Loopback only: a host name the SDK would reach on the internet is refused and recorded.
REACHED = []
_getaddrinfo = socket.getaddrinfo
def _loopback_only(host, *args, **kwargs):
    if host not in ("127.0.0.1", "localhost", "::1", None):
        REACHED.append(str(host))
        raise socket.gaierror(f"the SDK tests reach loopback only, not {host}")
    return _getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = _loopback_only

# The SDK's config file, as a user opts out of its telemetry (sagemaker.core.config).
with open("sagemaker-config.yaml", "w") as config:
    config.write("SchemaVersion: '1.0'\\nSageMaker:\\n  PythonSDK:\\n    Modules:\\n")
    config.write("      TelemetryOptOut: true\\n")
os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] = os.path.abspath("sagemaker-config.yaml")
"""

# The fix aws/sagemaker-core#225 asks for, made from outside: the SDK's own table of keys its
# snake_case -> PascalCase rule gets wrong.
SERVERLESS_KEY_FIX = """
from sagemaker.core.utils import utils as _core_utils
_core_utils.SPECIAL_SNAKE_TO_PASCAL_MAPPINGS["memory_size_in_mb"] = "MemorySizeInMB"
"""

INFERENCE = """
import os
import joblib
import numpy as np


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def predict_fn(data, model):
    rows = np.asarray(data, dtype=float)
    return np.column_stack([model.predict(rows), np.full(len(rows), 42.0)])
"""


@pytest.fixture(scope="module")
def forest(server: ColdbrewServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any, np.ndarray]:
    """A random forest's model.tar.gz (``model.joblib``) in the test bucket: its URL, the model
    and a few rows to predict."""
    archive, model = sklearn_archive(tmp_path_factory.mktemp("forest") / "model.tar.gz")
    s3_client(server).upload_file(str(archive), BUCKET, "sdk3/forest/model.tar.gz")
    rows = load_diabetes(return_X_y=True)[0][:3]
    return f"s3://{BUCKET}/sdk3/forest/model.tar.gz", model, rows


@pytest.fixture
def sm(sdk3: SDK) -> Iterator[Any]:
    """boto3 against the same server, to look at what the SDK left behind."""
    yield sdk3.server.client()


def _csv(rows: np.ndarray) -> str:
    return "\n".join(",".join(repr(float(value)) for value in row) for row in rows)


def _names(sm: Any) -> dict[str, list[str]]:
    return {
        "models": [m["ModelName"] for m in sm.list_models()["Models"]],
        "configs": [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]],
        "endpoints": [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]],
    }


def test_core_serverless_config_is_refused_by_botocore_before_a_request_is_sent(
    sdk3: SDK, sm: Any, forest: tuple[str, Any, np.ndarray]
) -> None:
    """aws/sagemaker-core#225: the documented call fails in the client, whatever the server.
    When a pinned SDK fixes it this test fails, and the README's workaround can go."""
    result = sdk3.run(
        CLIENT
        + """
from botocore.exceptions import ParamValidationError
from sagemaker.core.resources import EndpointConfig
from sagemaker.core.shapes import ProductionVariant, ProductionVariantServerlessConfig
try:
    EndpointConfig.create(
        endpoint_config_name="sdk3-refused",
        production_variants=[ProductionVariant(
            variant_name="AllTraffic", model_name="sdk3-refused",
            serverless_config=ProductionVariantServerlessConfig(memory_size_in_mb=2048, max_concurrency=2))])
    error = None
except ParamValidationError as exc:
    error = str(exc)
emit({"error": error, "reached": REACHED})
"""
    )
    assert result["reached"] == []
    assert result["error"] is not None
    assert 'Unknown parameter in ProductionVariants[0].ServerlessConfig: "MemorySizeInMb"' in result["error"]
    assert "sdk3-refused" not in _names(sm)["configs"]


def test_core_resources_deploy_invoke_delete_serverless(
    sdk3: SDK, sm: Any, forest: tuple[str, Any, np.ndarray]
) -> None:
    url, model, rows = forest
    result = sdk3.run(
        CLIENT
        + SERVERLESS_KEY_FIX
        + f"""
from sagemaker.core.resources import Endpoint, EndpointConfig, Model
from sagemaker.core.shapes import ContainerDefinition, ProductionVariant, ProductionVariantServerlessConfig

started = time.monotonic()
model = Model.create(
    model_name="sdk3-core",
    primary_container=ContainerDefinition(image={SKLEARN_IMAGE!r}, model_data_url={url!r}),
    execution_role_arn=ROLE,
)
config = EndpointConfig.create(
    endpoint_config_name="sdk3-core-config",
    production_variants=[ProductionVariant(
        variant_name="AllTraffic", model_name="sdk3-core",
        serverless_config=ProductionVariantServerlessConfig(memory_size_in_mb=2048, max_concurrency=2))],
)
endpoint = Endpoint.create(endpoint_name="sdk3-core", endpoint_config_name="sdk3-core-config")
created_status = endpoint.endpoint_status
endpoint.wait_for_status("InService", poll=1)
in_service = time.monotonic() - started
reply = endpoint.invoke(body={_csv(rows)!r}, content_type="text/csv", accept="application/json")
prediction = json.loads(reply.body.read())
variant = endpoint.production_variants[0]
described_config = EndpointConfig.get("sdk3-core-config").production_variants[0]
described = {{
    "config_memory": described_config.serverless_config.memory_size_in_mb,
    "current_memory": variant.current_serverless_config.memory_size_in_mb,
    "image": variant.deployed_images[0].specified_image,
    "model_data_url": Model.get("sdk3-core").primary_container.model_data_url,
}}
endpoint.delete()
endpoint.wait_for_delete(poll=1)
config.delete()
model.delete()
emit({{"prediction": prediction, "content_type": reply.content_type,
       "variant": reply.invoked_production_variant, "created_status": created_status,
       "described": described, "in_service_s": in_service, "reached": REACHED}})
"""
    )
    assert result["reached"] == []
    np.testing.assert_allclose(result["prediction"], model.predict(rows), rtol=1e-6)
    assert result["content_type"] == "application/json"
    assert result["variant"] == "AllTraffic"
    assert result["created_status"] in ("Creating", "InService")
    assert result["described"] == {
        "config_memory": 2048,
        "current_memory": 2048,
        "image": SKLEARN_IMAGE,
        "model_data_url": url,
    }
    assert result["in_service_s"] < 30
    names = _names(sm)
    assert "sdk3-core" not in names["models"] + names["endpoints"]
    assert "sdk3-core-config" not in names["configs"]


MODEL_BUILDER = """
os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"  # no IAM to ask
from sagemaker.core.inference_config import ServerlessInferenceConfig
from sagemaker.core.resources import EndpointConfig
from sagemaker.serve.model_builder import ModelBuilder
"""


def test_model_builder_prepackaged_archive_serverless(
    sdk3: SDK, sm: Any, forest: tuple[str, Any, np.ndarray]
) -> None:
    """An archive already in S3 and a framework image: ModelBuilder passes both through to
    CreateModel as they are ("pass-through" in sagemaker.serve), no upload, no default bucket."""
    url, model, rows = forest
    result = sdk3.run(
        CLIENT
        + MODEL_BUILDER
        + f"""
builder = ModelBuilder(s3_model_data_url={url!r}, image_uri={SKLEARN_IMAGE!r}, role_arn=ROLE,
                       model_path=os.path.abspath("model-builder"))
model = builder.build(model_name="sdk3-builder")
sagemaker_client = builder.sagemaker_session.sagemaker_client
container = sagemaker_client.describe_model(ModelName="sdk3-builder")["PrimaryContainer"]
started = time.monotonic()
endpoint = builder.deploy(
    endpoint_name="sdk3-builder",
    inference_config=ServerlessInferenceConfig(memory_size_in_mb=2048, max_concurrency=2),
    wait=False,
)
endpoint.wait_for_status("InService", poll=1)
in_service = time.monotonic() - started
reply = endpoint.invoke(body={_csv(rows)!r}, content_type="text/csv")
prediction = json.loads(reply.body.read())
serverless = endpoint.production_variants[0].current_serverless_config
endpoint.delete()
endpoint.wait_for_delete(poll=1)
EndpointConfig.get(endpoint.endpoint_config_name).delete()
model.delete()
emit({{"prediction": prediction, "container": container, "memory": serverless.memory_size_in_mb,
       "max_concurrency": serverless.max_concurrency, "in_service_s": in_service, "reached": REACHED}})
"""
    )
    assert result["reached"] == []
    np.testing.assert_allclose(result["prediction"], model.predict(rows), rtol=1e-6)
    assert result["container"]["Image"] == SKLEARN_IMAGE
    assert result["container"]["ModelDataUrl"] == url
    assert (result["memory"], result["max_concurrency"]) == (2048, 2)
    assert result["in_service_s"] < 30
    names = _names(sm)
    assert "sdk3-builder" not in names["models"] + names["configs"] + names["endpoints"]


def test_model_builder_source_code_and_the_default_deploy_wait(
    sdk3: SDK, sm: Any, forest: tuple[str, Any, np.ndarray]
) -> None:
    """``source_code`` with an entry script: ModelBuilder repacks the archive with the code under
    ``code/`` and sets ``SAGEMAKER_SUBMIT_DIRECTORY=/opt/ml/model/code``. ``deploy()`` as
    documented (``wait=True``): it asks CloudWatch Logs for the endpoint's log group (coldbrew's,
    on the same URL) and sleeps 30 s before its first DescribeEndpoint."""
    url, model, rows = forest
    source = sdk3.workdir / "src"
    source.mkdir()
    (source / "inference.py").write_text(INFERENCE)
    result = sdk3.run(
        CLIENT
        + MODEL_BUILDER
        + f"""
from sagemaker.core.helper.session_helper import Session
from sagemaker.core.training.configs import SourceCode

builder = ModelBuilder(
    s3_model_data_url={url!r},
    image_uri={SKLEARN_IMAGE!r},
    source_code=SourceCode(source_dir=os.path.abspath("src"), entry_script="inference.py"),
    role_arn=ROLE,
    sagemaker_session=Session(default_bucket=BUCKET),
    model_path=os.path.abspath("model-builder"),
)
model = builder.build(model_name="sdk3-source")
sagemaker_client = builder.sagemaker_session.sagemaker_client
container = sagemaker_client.describe_model(ModelName="sdk3-source")["PrimaryContainer"]
started = time.monotonic()
endpoint = builder.deploy(
    endpoint_name="sdk3-source",
    inference_config=ServerlessInferenceConfig(memory_size_in_mb=2048, max_concurrency=2),
)
deploy_s = time.monotonic() - started
status = endpoint.endpoint_status
reply = endpoint.invoke(body=json.dumps({rows.tolist()!r}), content_type="application/json",
                        accept="application/json")
prediction = json.loads(reply.body.read())
endpoint.delete()
endpoint.wait_for_delete(poll=1)
EndpointConfig.get(endpoint.endpoint_config_name).delete()
model.delete()
emit({{"prediction": prediction, "container": container, "status": status, "deploy_s": deploy_s,
       "reached": REACHED}})
"""
    )
    assert result["reached"] == []
    assert result["status"] == "InService"
    assert result["deploy_s"] >= 30  # the SDK's first poll, not coldbrew
    prediction = np.asarray(result["prediction"])
    np.testing.assert_allclose(prediction[:, 0], model.predict(rows), rtol=1e-6)
    assert prediction[:, 1].tolist() == [42.0] * len(rows)
    env = result["container"]["Environment"]
    assert env["SAGEMAKER_PROGRAM"] == "inference.py"
    assert env["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    repacked = result["container"]["ModelDataUrl"]
    assert repacked.startswith(f"s3://{BUCKET}/") and repacked.endswith("/model.tar.gz") and repacked != url
    names = _names(sm)
    assert "sdk3-source" not in names["models"] + names["configs"] + names["endpoints"]
