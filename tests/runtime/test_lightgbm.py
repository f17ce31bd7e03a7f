"""LightGBM endpoints: a text model from Booster.save_model, next to a README.txt that is not one."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes

from tests.runtime.helpers import (
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

lgb = pytest.importorskip("lightgbm")

X, Y = load_diabetes(return_X_y=True)
ROWS = X[10:16]


@pytest.fixture(scope="module")
def runtime(server: ColdbrewServer) -> Any:
    return server.client("sagemaker-runtime", read_timeout=60)


@pytest.fixture(scope="module")
def booster(sm: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("lgb")
    model = lgb.train({"verbose": -1, "num_leaves": 15}, lgb.Dataset(X, Y), num_boost_round=20)
    text = file_bytes(model.save_model, "model.txt", directory)
    # Any *.txt saved by LightGBM is found; a README.txt beside it is not taken for a model.
    create_endpoint(sm, directory, "lgb", {"regressor.txt": text, "README.txt": b"trained on diabetes\n"})
    wait_all(sm, ["lgb"])
    return model


@pytest.mark.parametrize(
    ("body", "content_type", "accept", "decode"),
    [
        (csv_body(ROWS), "text/csv", "text/csv", lambda b: from_csv(b).ravel()),
        (json.dumps(ROWS.tolist()), "application/json", "application/json", json.loads),
        (
            json.dumps({"instances": ROWS.tolist()}),
            "application/json",
            "application/jsonlines",
            from_jsonlines,
        ),
        (jsonlines_body(ROWS), "application/jsonlines", "application/json", json.loads),
        (npy_body(ROWS), "application/x-npy", "application/x-npy", from_npy),
    ],
    ids=["csv", "json", "json-instances", "jsonlines", "npy"],
)
def test_predictions_equal_lightgbm(
    runtime: Any, booster: Any, body: Any, content_type: str, accept: str, decode: Any
) -> None:
    got, answered = invoke(runtime, "lgb", body, content_type, accept)
    assert answered == accept
    # float64 throughout, and Python's repr round-trips it: equal, not merely close.
    np.testing.assert_array_equal(np.asarray(decode(got), dtype=np.float64), booster.predict(ROWS))


@pytest.mark.parametrize(
    ("body", "content_type", "problem"),
    [
        ("1,2\n3\n", "text/csv", "CSV row 2 has 1 value but the first row has 2"),
        (csv_body(ROWS[:, :4]), "text/csv", "each row must have 10 features, got 4"),
        ("{'a': 1}", "application/json", "not valid JSON"),
    ],
    ids=["ragged-csv", "feature-count", "invalid-json"],
)
def test_bad_bodies(runtime: Any, booster: Any, body: str, content_type: str, problem: str) -> None:
    status, message = model_error(runtime, "lgb", body, content_type)
    assert status == 400 and problem in message


def test_libsvm_is_for_xgboost_only(runtime: Any, booster: Any) -> None:
    status, message = model_error(runtime, "lgb", "0:1 1:2", "text/libsvm")
    assert status == 415
    assert "'text/libsvm' is not supported by the default input_fn" in message
