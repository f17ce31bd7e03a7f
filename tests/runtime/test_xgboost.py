"""XGBoost endpoints: a Booster as SageMaker's XGBoost writes it, a JSON model file, and a pickled
scikit-learn wrapper under the SageMaker XGBoost image; every content type in and out."""

from __future__ import annotations

import io
import json
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris

from tests.runtime.helpers import (
    XGBOOST_IMAGE,
    create_endpoint,
    csv_body,
    file_bytes,
    from_csv,
    from_jsonlines,
    from_npy,
    invoke,
    jsonlines_body,
    model_error,
    npy_body,
    wait_all,
)
from tests.support import ColdbrewServer

xgb = pytest.importorskip("xgboost")

X, Y = load_diabetes(return_X_y=True)
ROWS = X[:6]


@pytest.fixture(scope="module")
def runtime(server: ColdbrewServer) -> Any:
    return server.client("sagemaker-runtime", read_timeout=60)


@pytest.fixture(scope="module")
def models(sm: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("xgb")
    booster = xgb.train({"max_depth": 3, "eta": 0.3}, xgb.DMatrix(X, Y), num_boost_round=20)
    iris_x, iris_y = load_iris(return_X_y=True)
    classifier = xgb.XGBClassifier(n_estimators=10, max_depth=2).fit(iris_x, iris_y)
    pickled = io.BytesIO()
    joblib.dump(classifier, pickled)
    # UBJSON content in a file named xgboost-model, as SageMaker's XGBoost 1.7 container writes it
    # (saved under .ubj here because XGBoost warns when the name has no extension).
    create_endpoint(
        sm, directory, "xgb-booster", {"xgboost-model": file_bytes(booster.save_model, "m.ubj", directory)}
    )
    create_endpoint(
        sm, directory, "xgb-json", {"model.json": file_bytes(booster.save_model, "model.json", directory)}
    )
    create_endpoint(sm, directory, "xgb-wrapper", {"model.joblib": pickled.getvalue()}, image=XGBOOST_IMAGE)
    wait_all(sm, ["xgb-booster", "xgb-json", "xgb-wrapper"])
    return {"booster": booster, "classifier": classifier, "iris": iris_x}


def expected(models: dict[str, Any], rows: np.ndarray) -> np.ndarray:
    return np.asarray(models["booster"].predict(xgb.DMatrix(rows)))


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (csv_body(ROWS), "text/csv"),
        (json.dumps(ROWS.tolist()), "application/json"),
        (json.dumps({"instances": ROWS.tolist()}), "application/json"),
        (json.dumps({"inputs": ROWS.tolist()}), "application/json"),
        (jsonlines_body(ROWS), "application/jsonlines"),
        (jsonlines_body(ROWS, key="features"), "application/jsonlines"),
        (npy_body(ROWS), "application/x-npy"),
    ],
    ids=["csv", "json-rows", "json-instances", "json-inputs", "jsonlines", "jsonlines-features", "npy"],
)
def test_booster_predictions_equal_xgboost(
    runtime: Any, models: dict[str, Any], body: Any, content_type: str
) -> None:
    got, answered = invoke(runtime, "xgb-booster", body, content_type, "application/json")
    assert answered == "application/json"
    # XGBoost predicts in float32, which JSON carries exactly.
    np.testing.assert_array_equal(np.float32(json.loads(got)), expected(models, ROWS))


@pytest.mark.parametrize(
    "accept", ["text/csv", "application/jsonlines", "application/x-npy", "application/json"]
)
def test_accept_chooses_the_output(runtime: Any, models: dict[str, Any], accept: str) -> None:
    got, answered = invoke(runtime, "xgb-json", csv_body(ROWS), "text/csv", accept)
    assert answered == accept
    decoded = {
        "text/csv": lambda b: from_csv(b).ravel(),
        "application/jsonlines": from_jsonlines,
        "application/x-npy": from_npy,
        "application/json": json.loads,
    }[accept](got)
    np.testing.assert_array_equal(np.asarray(decoded, dtype=np.float32), expected(models, ROWS))


def test_libsvm_with_and_without_labels_and_missing_features(runtime: Any, models: dict[str, Any]) -> None:
    dense = ROWS[:2]
    lines = [
        "151.0 " + " ".join(f"{i}:{v!r}" for i, v in enumerate(dense[0].tolist())),  # labelled
        " ".join(f"{i}:{v!r}" for i, v in enumerate(dense[1].tolist())),  # unlabelled
        "0:0.03 4:-0.02 9:0.01",  # sparse: the absent features are missing values
    ]
    sparse = np.full((1, X.shape[1]), np.nan)
    sparse[0, [0, 4, 9]] = [0.03, -0.02, 0.01]
    got, _ = invoke(runtime, "xgb-booster", "\n".join(lines), "text/libsvm", "application/json")
    # libsvm values are read as float32, as XGBoost's own parser stores them.
    want = expected(models, np.vstack([dense, sparse]).astype(np.float32))
    np.testing.assert_array_equal(np.float32(json.loads(got)), want)


def test_sklearn_wrapper_under_the_xgboost_image(runtime: Any, models: dict[str, Any]) -> None:
    rows = models["iris"][::30]
    want = models["classifier"].predict(rows)
    # No Accept: the XGBoost container answers CSV.
    got, answered = invoke(runtime, "xgb-wrapper", csv_body(rows), "text/csv")
    assert answered == "text/csv"
    np.testing.assert_array_equal(from_csv(got).ravel(), want)
    libsvm = "\n".join(" ".join(f"{i}:{v!r}" for i, v in enumerate(row.tolist())) for row in rows)
    got, _ = invoke(runtime, "xgb-wrapper", libsvm, "text/x-libsvm", "application/json")
    np.testing.assert_array_equal(json.loads(got), want)


@pytest.mark.parametrize(
    ("body", "content_type", "problem"),
    [
        ("1,2,3\n4,5\n", "text/csv", "CSV row 2 has 2 values but the first row has 3"),
        ("1,2,3\n", "text/csv", "each row must have 10 features, got 3"),
        ("[[1, 2", "application/json", "not valid JSON"),
        ('{"rows": [[1]]}', "application/json", '"instances" or "inputs"'),
        ("[1, 2]\n{oops", "application/jsonlines", "JSON Lines line 2 is not valid JSON"),
        ("1 0:1 bad", "text/libsvm", "libsvm line 1: 'bad' is not index:value"),
        ("1 0:1 12:3", "text/libsvm", "feature index 12, but the model has 10 features"),
        (b"not an array", "application/x-npy", "not a valid .npy array"),
    ],
    ids=[
        "ragged-csv",
        "feature-count",
        "invalid-json",
        "json-object",
        "jsonlines",
        "libsvm-token",
        "libsvm-index",
        "npy",
    ],
)
def test_bad_bodies_are_400s_naming_the_problem(
    runtime: Any, models: dict[str, Any], body: Any, content_type: str, problem: str
) -> None:
    status, message = model_error(runtime, "xgb-booster", body, content_type)
    assert status == 400
    assert problem in message


def test_unsupported_types_are_415_and_406(runtime: Any, models: dict[str, Any]) -> None:
    status, message = model_error(runtime, "xgb-booster", b"\x89PNG", "image/png")
    assert status == 415
    assert "'image/png' is not supported by the XGBoost input_fn" in message and "text/libsvm" in message
    status, message = model_error(runtime, "xgb-booster", csv_body(ROWS), "text/csv", accept="image/png")
    assert status == 406
    assert "Accept 'image/png' is not supported" in message
