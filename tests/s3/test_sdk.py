"""The SageMaker Python SDK 2.x against the embedded S3, as a notebook runs it with only
AWS_ENDPOINT_URL set: the session's default bucket is made (ListBuckets, HeadBucket's 404,
CreateBucket), the model archive and the source directory are uploaded, and coldbrew deploys
from them. The SDK runs in its own environment (tests/sdk/environments.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from tests.s3.conftest import client_env
from tests.sdk.environments import python_for
from tests.support import ColdbrewServer, tar_gz

CLIENT = """
import json, boto3, sagemaker
from sagemaker.serverless import ServerlessInferenceConfig
from sagemaker.serializers import JSONSerializer
from sagemaker.deserializers import JSONDeserializer
from sagemaker.sklearn import SKLearnModel

session = sagemaker.Session(boto_session=boto3.Session(), default_bucket="sdk-embedded")
bucket = session.default_bucket()  # created here: it does not exist yet
model_data = session.upload_data("model.tar.gz", key_prefix="ridge")
model = SKLearnModel(model_data=model_data, role="arn:aws:iam::123456789012:role/SageMakerRole",
                     entry_point="inference.py", source_dir="src", framework_version="1.2-1",
                     sagemaker_session=session)
model.deploy(serverless_inference_config=ServerlessInferenceConfig(memory_size_in_mb=2048, max_concurrency=1),
             endpoint_name="sdk-embedded", wait=False)
session.wait_for_endpoint("sdk-embedded", poll=1)
predictor = sagemaker.predictor.Predictor("sdk-embedded", sagemaker_session=session,
                                          serializer=JSONSerializer(), deserializer=JSONDeserializer())
prediction = predictor.predict(ROWS)
env = session.sagemaker_client.describe_model(ModelName=model.name)["PrimaryContainer"]["Environment"]
keys = [o["Key"] for o in session.boto_session.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
predictor.delete_endpoint()  # the SDK prints progress dots; the result goes on a line of its own
print("\\nRESULT " + json.dumps({"bucket": bucket, "prediction": prediction, "env": env, "keys": keys}))
"""

INFERENCE = """
import os, joblib, numpy as np

def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))

def predict_fn(data, model):
    return model.predict(np.asarray(data, dtype=float)) * 3
"""


def test_sdk2_default_bucket_uploads_and_deploy(server: ColdbrewServer, tmp_path: Path) -> None:
    X, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(X, y)
    joblib.dump(model, tmp_path / "model.joblib")
    (tmp_path / "model.tar.gz").write_bytes(
        tar_gz({"model.joblib": (tmp_path / "model.joblib").read_bytes()})
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "inference.py").write_text(INFERENCE)
    rows = X[:2].tolist()
    (tmp_path / "client.py").write_text(f"ROWS = {rows!r}\n" + CLIENT)
    env = {k: v for k, v in client_env(server, tmp_path).items() if not k.startswith("PYTHON")}
    env["SAGEMAKER_SUPPRESS_V2_WARNING"] = "1"
    done = subprocess.run(
        [str(python_for("v2")), "client.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    results = [line[len("RESULT ") :] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and results, done.stdout[-3000:] + done.stderr[-5000:] + server.log()[-3000:]
    result = json.loads(results[-1])
    assert result["bucket"] == "sdk-embedded"
    assert result["env"]["SAGEMAKER_SUBMIT_DIRECTORY"].startswith("s3://sdk-embedded/")
    assert "ridge/model.tar.gz" in result["keys"] and any(
        k.endswith("/sourcedir.tar.gz") for k in result["keys"]
    )
    np.testing.assert_allclose(result["prediction"], model.predict(X[:2]) * 3, rtol=1e-6)
