"""SageMaker Python SDK 2.x (the version pinned in requirements-v2.txt) against coldbrew.

The framework model classes with ``entry_point`` and ``source_dir``, serverless and on
instances, as their documentation shows them (sagemaker.readthedocs.io, "Deploy ... Models":
``SKLearnModel``, ``XGBoostModel``, ``PyTorchModel``). What the SDK does with the code differs by
framework, and each path is exercised:

- scikit-learn and XGBoost upload ``sourcedir.tar.gz`` and set ``SAGEMAKER_SUBMIT_DIRECTORY`` to
  its ``s3://`` URL, which coldbrew downloads at CreateEndpoint;
- PyTorch (framework 1.2 and later) repacks ``model.tar.gz`` with the code under ``code/`` and
  sets ``SAGEMAKER_SUBMIT_DIRECTORY=/opt/ml/model/code``.

``deploy(wait=False)`` plus the SDK's own wait with a 1 s poll keeps these fast; one test takes
the default ``deploy()``, which sleeps 30 s before its first status check (see the README).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import Ridge

from tests.sdk.conftest import SDK
from tests.support import tar_gz

SESSION = """
import boto3, sagemaker
from sagemaker.serverless import ServerlessInferenceConfig
from sagemaker.serializers import JSONSerializer, CSVSerializer
from sagemaker.deserializers import JSONDeserializer
boto_session = boto3.Session()
session = sagemaker.Session(boto_session=boto_session, default_bucket=BUCKET)
"""

SKLEARN_INFERENCE = """
import os
import joblib
import numpy as np
import coldbrew_test_scaler  # from requirements.txt, installed at CreateEndpoint


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def predict_fn(data, model):
    predictions = model.predict(np.asarray(data, dtype=float))
    return np.column_stack([predictions, np.full(len(predictions), coldbrew_test_scaler.FACTOR)])
"""


def _source_dir(root: Path, files: dict[str, str]) -> Path:
    source = root / "src"
    source.mkdir()
    for name, text in files.items():
        (source / name).write_text(text)
    return source


@pytest.mark.parametrize(
    "placement",
    [
        "serverless_inference_config=ServerlessInferenceConfig(memory_size_in_mb=2048, max_concurrency=2)",
        'initial_instance_count=1, instance_type="ml.m5.large"',
    ],
    ids=["serverless", "instance"],
)
def test_sklearn_model_with_source_dir_and_requirements(
    sdk2: SDK, ridge: tuple[Path, Ridge, np.ndarray], placement: str
) -> None:
    archive, model, rows = ridge
    endpoint = "sdk2-sklearn-" + ("serverless" if "serverless" in placement else "instance")
    _source_dir(
        sdk2.workdir, {"inference.py": SKLEARN_INFERENCE, "requirements.txt": "coldbrew-test-scaler==1.0\n"}
    )
    result = sdk2.run(
        SESSION
        + f"""
from sagemaker.sklearn import SKLearnModel
model_data = session.upload_data({str(archive)!r}, key_prefix="sklearn-model")
model = SKLearnModel(model_data=model_data, role=ROLE, entry_point="inference.py", source_dir="src",
                     framework_version="1.2-1", sagemaker_session=session)
model.deploy({placement}, endpoint_name={endpoint!r}, wait=False)
session.wait_for_endpoint({endpoint!r}, poll=1)
predictor = sagemaker.predictor.Predictor({endpoint!r}, sagemaker_session=session,
                                          serializer=JSONSerializer(), deserializer=JSONDeserializer())
prediction = predictor.predict({rows.tolist()!r})
env = session.sagemaker_client.describe_model(ModelName=model.name)["PrimaryContainer"]["Environment"]
predictor.delete_endpoint()
model.delete_model()
emit({{"prediction": prediction, "env": env}})
"""
    )
    assert result["env"]["SAGEMAKER_SUBMIT_DIRECTORY"].startswith("s3://")
    assert result["env"]["SAGEMAKER_SUBMIT_DIRECTORY"].endswith("/sourcedir.tar.gz")
    prediction = np.asarray(result["prediction"])
    np.testing.assert_allclose(prediction[:, 0], model.predict(rows), rtol=1e-6)
    assert prediction[:, 1].tolist() == [1000.0] * 3


def test_xgboost_model_with_entry_point_on_an_instance(sdk2: SDK) -> None:
    import xgboost

    X, y = load_diabetes(return_X_y=True)
    booster = xgboost.train({"max_depth": 3}, xgboost.DMatrix(X, label=y), num_boost_round=10)
    # Under .ubj: XGBoost warns when the name has no extension; the archive names it as
    # SageMaker's XGBoost container writes it.
    booster.save_model(str(sdk2.workdir / "model.ubj"))
    archive = sdk2.workdir / "model.tar.gz"
    archive.write_bytes(tar_gz({"xgboost-model": (sdk2.workdir / "model.ubj").read_bytes()}))
    _source_dir(
        sdk2.workdir,
        {
            "inference.py": (
                "import os, xgboost\n"
                "def model_fn(model_dir):\n"
                "    booster = xgboost.Booster()\n"
                "    booster.load_model(os.path.join(model_dir, 'xgboost-model'))\n"
                "    return booster\n"
            )
        },
    )
    csv = "\n".join(",".join(str(v) for v in row) for row in X[:2])
    result = sdk2.run(
        SESSION
        + f"""
from sagemaker.xgboost import XGBoostModel
from sagemaker.deserializers import CSVDeserializer
model_data = session.upload_data({str(archive)!r}, key_prefix="xgboost-model")
model = XGBoostModel(model_data=model_data, role=ROLE, entry_point="inference.py", source_dir="src",
                     framework_version="1.7-1", sagemaker_session=session)
predictor = model.deploy(initial_instance_count=1, instance_type="ml.m5.large", endpoint_name="sdk2-xgboost",
                         wait=False)
session.wait_for_endpoint("sdk2-xgboost", poll=1)
predictor = sagemaker.predictor.Predictor("sdk2-xgboost", sagemaker_session=session,
                                          serializer=CSVSerializer(), deserializer=CSVDeserializer())
prediction = predictor.predict({csv!r})
variant = session.sagemaker_client.describe_endpoint(EndpointName="sdk2-xgboost")["ProductionVariants"][0]
predictor.delete_endpoint()
emit({{"prediction": prediction, "instances": variant["CurrentInstanceCount"]}})
"""
    )
    expected = booster.predict(xgboost.DMatrix(X[:2]))
    got = np.asarray(result["prediction"], dtype=float).ravel()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert result["instances"] == 1


def test_pytorch_model_repacked_with_code_serverless(sdk2: SDK) -> None:
    import torch

    X, y = load_iris(return_X_y=True)
    net = torch.nn.Linear(4, 3)
    torch.manual_seed(0)
    with torch.no_grad():
        net.weight.copy_(torch.randn(3, 4))
    torch.save(net.state_dict(), sdk2.workdir / "model.pth")
    archive = sdk2.workdir / "model.tar.gz"
    archive.write_bytes(tar_gz({"model.pth": (sdk2.workdir / "model.pth").read_bytes()}))
    _source_dir(
        sdk2.workdir,
        {
            "inference.py": (
                "import os, json, torch\n"
                "from net import build\n"
                "def model_fn(model_dir):\n"
                "    net = build()\n"
                "    net.load_state_dict(torch.load(os.path.join(model_dir, 'model.pth')))\n"
                "    return net.eval()\n"
                "def input_fn(body, content_type):\n"
                "    return torch.tensor(json.loads(body), dtype=torch.float32)\n"
                "def predict_fn(data, model):\n"
                "    with torch.no_grad():\n"
                "        return model(data).argmax(dim=1).tolist()\n"
                "def output_fn(prediction, accept):\n"
                "    return json.dumps(prediction)\n"
            ),
            "net.py": "import torch\ndef build():\n    return torch.nn.Linear(4, 3)\n",
        },
    )
    result = sdk2.run(
        SESSION
        + f"""
from sagemaker.pytorch import PyTorchModel
model_data = session.upload_data({str(archive)!r}, key_prefix="pytorch-model")
model = PyTorchModel(model_data=model_data, role=ROLE, entry_point="inference.py", source_dir="src",
                     framework_version="2.1", py_version="py310", sagemaker_session=session)
model.deploy(serverless_inference_config=ServerlessInferenceConfig(memory_size_in_mb=3072, max_concurrency=1),
             endpoint_name="sdk2-pytorch", wait=False)
session.wait_for_endpoint("sdk2-pytorch", poll=1)
predictor = sagemaker.predictor.Predictor("sdk2-pytorch", sagemaker_session=session,
                                          serializer=JSONSerializer(), deserializer=JSONDeserializer())
prediction = predictor.predict({X[:5].tolist()!r})
env = session.sagemaker_client.describe_model(ModelName=model.name)["PrimaryContainer"]["Environment"]
predictor.delete_endpoint()
emit({{"prediction": prediction, "env": env}})
"""
    )
    assert result["env"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    with torch.no_grad():
        expected = net(torch.tensor(X[:5], dtype=torch.float32)).argmax(dim=1).tolist()
    assert result["prediction"] == expected


def test_model_deploy_with_the_default_wait_and_delete(
    sdk2: SDK, ridge: tuple[Path, Ridge, np.ndarray]
) -> None:
    """The README's SDK 2.x snippet: ``Model(...).deploy()`` as documented, waiting its own way."""
    archive, model, rows = ridge
    result = sdk2.run(
        SESSION
        + f"""
import time
from sagemaker.model import Model
model_data = session.upload_data({str(archive)!r}, key_prefix="plain-model")
model = Model(image_uri="246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
              model_data=model_data, role=ROLE, sagemaker_session=session,
              predictor_cls=sagemaker.predictor.Predictor)
started = time.monotonic()
predictor = model.deploy(serverless_inference_config=ServerlessInferenceConfig(), endpoint_name="sdk2-plain",
                         serializer=CSVSerializer(), deserializer=JSONDeserializer())
waited = time.monotonic() - started
prediction = predictor.predict({rows.tolist()!r})
predictor.delete_endpoint()
deleted = session.sagemaker_client.get_waiter("endpoint_deleted")
deleted.wait(EndpointName="sdk2-plain", WaiterConfig={{"Delay": 1}})
gone = [e["EndpointName"] for e in session.sagemaker_client.list_endpoints()["Endpoints"]]
emit({{"prediction": prediction, "waited": waited, "endpoints": gone}})
"""
    )
    np.testing.assert_allclose(result["prediction"], model.predict(rows), rtol=1e-6)
    assert "sdk2-plain" not in result["endpoints"]
    # deploy() sleeps its poll interval (30 s) before the first DescribeEndpoint: the client's wait,
    # which the README's fast path avoids.
    assert result["waited"] >= 29
