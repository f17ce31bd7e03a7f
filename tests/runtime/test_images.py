"""The image URI chooses the runtime, and a SageMaker framework image brings its container's rules:
SAGEMAKER_PROGRAM/SAGEMAKER_SUBMIT_DIRECTORY, default handlers, and requirements.txt."""

from __future__ import annotations

import io
import json
import textwrap
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression

from tests.runtime.helpers import (
    SKLEARN_IMAGE,
    XGBOOST_IMAGE,
    create_endpoint,
    file_bytes,
    from_csv,
    invoke,
    wait_all,
)
from tests.support import ColdbrewServer

xgb = pytest.importorskip("xgboost")

X, Y = load_diabetes(return_X_y=True)
ROWS = X[:4]


@pytest.fixture(scope="module")
def runtime(server: ColdbrewServer) -> Any:
    return server.client("sagemaker-runtime", read_timeout=60)


@pytest.fixture(scope="module")
def deployed(sm: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("images")
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(X, Y), num_boost_round=10)
    # A file name no framework claims by itself: the XGBoost container loads whatever single
    # file the model directory holds, so under its image this serves; under another, it cannot.
    odd = {"trained-booster.bin": file_bytes(booster.save_model, "m.ubj", directory)}
    create_endpoint(sm, directory, "img-xgb", odd, image=XGBOOST_IMAGE.replace("us-east-1", "eu-west-1"))
    create_endpoint(sm, directory, "img-plain", odd, image="coldbrew/any")

    iris_x, iris_y = load_iris(return_X_y=True)
    classifier = LogisticRegression(max_iter=1000).fit(iris_x, iris_y)
    pickled = io.BytesIO()
    joblib.dump(classifier, pickled)
    # The scikit-learn container's program, named by SAGEMAKER_PROGRAM inside the directory the
    # SageMaker SDK points SAGEMAKER_SUBMIT_DIRECTORY to when it packs code into the archive.
    # It defines predict_fn only: the container's defaults load the model and read and write bodies.
    serve = textwrap.dedent("""
        def predict_fn(data, model):
            return model.predict_proba(data)
    """)
    create_endpoint(
        sm,
        directory,
        "img-sklearn",
        {"model.joblib": pickled.getvalue(), "code/serve.py": serve.encode()},
        image=SKLEARN_IMAGE,
        environment={"SAGEMAKER_PROGRAM": "serve.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"},
    )
    create_endpoint(
        sm,
        directory,
        "img-s3code",
        {"model.joblib": pickled.getvalue()},
        image=SKLEARN_IMAGE,
        environment={
            "SAGEMAKER_PROGRAM": "serve.py",
            "SAGEMAKER_SUBMIT_DIRECTORY": "s3://bucket/job/source/sourcedir.tar.gz",
        },
    )
    needs = "import coldbrew_not_a_real_package\n\ndef model_fn(model_dir):\n    return None\n"
    create_endpoint(
        sm,
        directory,
        "img-requirements",
        {
            "model.joblib": pickled.getvalue(),
            "code/inference.py": needs.encode(),
            "code/requirements.txt": b"coldbrew-not-a-real-package==1.0\n",
        },
        image=SKLEARN_IMAGE,
    )
    wait_all(sm, ["img-xgb", "img-sklearn"])
    failed = wait_all(sm, ["img-plain", "img-s3code", "img-requirements"], status="Failed")
    return {"booster": booster, "classifier": classifier, "iris": iris_x, "failed": failed}


def test_xgboost_image_serves_as_the_xgboost_container(runtime: Any, deployed: dict[str, Any]) -> None:
    got, answered = invoke(
        runtime,
        "img-xgb",
        "0 " + " ".join(f"{i}:{v!r}" for i, v in enumerate(ROWS[0].tolist())),
        "text/libsvm",
    )
    assert answered == "text/csv"  # the XGBoost container's default Accept
    want = deployed["booster"].predict(xgb.DMatrix(ROWS[:1].astype(np.float32)))
    np.testing.assert_array_equal(np.float32(from_csv(got).ravel()), want)


def test_other_image_finds_no_model(deployed: dict[str, Any]) -> None:
    reason = deployed["failed"]["img-plain"]["FailureReason"]
    assert "No model file found in" in reason and "xgboost-model" in reason


def test_sklearn_image_program_in_submit_directory(runtime: Any, deployed: dict[str, Any]) -> None:
    rows = deployed["iris"][::50]
    got, answered = invoke(runtime, "img-sklearn", json.dumps(rows.tolist()), "application/json")
    assert answered == "application/json"
    np.testing.assert_array_equal(json.loads(got), deployed["classifier"].predict_proba(rows))


def test_an_s3_submit_directory_that_cannot_be_fetched_says_why(deployed: dict[str, Any]) -> None:
    # Downloaded at CreateEndpoint (tests/sdk and tests/s3 have ones that can be), here from the
    # server's embedded S3, which has no such bucket.
    reason = deployed["failed"]["img-s3code"]["FailureReason"]
    assert (
        "Could not find the source directory at s3://bucket/job/source/sourcedir.tar.gz: the bucket "
        in reason
    )
    assert reason.endswith("(SAGEMAKER_SUBMIT_DIRECTORY)")


def test_a_requirement_pip_cannot_find_fails_the_endpoint(deployed: dict[str, Any]) -> None:
    # Installed at CreateEndpoint, offline here (the test server's COLDBREW_PIP_ARGS is --no-index).
    reason = deployed["failed"]["img-requirements"]["FailureReason"]
    assert "Installing code/requirements.txt in " in reason and "(pip exited with status 1)" in reason
    assert "No matching distribution found for coldbrew-not-a-real-package==1.0" in reason
