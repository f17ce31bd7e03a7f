"""ONNX endpoints: scikit-learn models converted with skl2onnx and run by onnxruntime, compared
with onnxruntime's own output; a graph with two outputs; and a missing onnxruntime."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression

from tests.runtime.helpers import (
    create_endpoint,
    csv_body,
    from_csv,
    from_jsonlines,
    from_npy,
    invoke,
    jsonlines_body,
    model_error,
    npy_body,
    wait_all,
)
from tests.support import ColdbrewServer, wait_for_status

ort = pytest.importorskip("onnxruntime")
skl2onnx = pytest.importorskip("skl2onnx")

X, Y = load_diabetes(return_X_y=True)
ROWS = X[:5]
IRIS_X, IRIS_Y = load_iris(return_X_y=True)
FLOWERS = IRIS_X[::37]


@pytest.fixture(scope="module")
def runtime(server: ColdbrewServer) -> Any:
    return server.client("sagemaker-runtime", read_timeout=60)


@pytest.fixture(scope="module")
def sessions(sm: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("onnx")
    regressor = RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0).fit(X, Y)
    classifier = LogisticRegression(max_iter=1000).fit(IRIS_X, IRIS_Y)
    # float32 input, one float output [N, 1]; and a classifier with two outputs: the label and
    # skl2onnx's default ZipMap probabilities ({class: probability} per row).
    regressor_onnx = skl2onnx.to_onnx(regressor, X[:1].astype(np.float32)).SerializeToString()
    classifier_onnx = skl2onnx.to_onnx(classifier, IRIS_X[:1].astype(np.float32)).SerializeToString()
    create_endpoint(sm, directory, "onnx-reg", {"model.onnx": regressor_onnx})
    create_endpoint(sm, directory, "onnx-clf", {"iris.onnx": classifier_onnx})
    wait_all(sm, ["onnx-reg", "onnx-clf"])
    return {
        "reg": ort.InferenceSession(regressor_onnx, providers=["CPUExecutionProvider"]),
        "clf": ort.InferenceSession(classifier_onnx, providers=["CPUExecutionProvider"]),
    }


def own_output(session: Any, rows: np.ndarray) -> list[Any]:
    return session.run(None, {session.get_inputs()[0].name: rows.astype(np.float32)})


@pytest.mark.parametrize(
    ("body", "content_type", "accept", "decode"),
    [
        (csv_body(ROWS), "text/csv", "application/json", json.loads),
        (json.dumps({"instances": ROWS.tolist()}), "application/json", "text/csv", from_csv),
        (jsonlines_body(ROWS), "application/jsonlines", "application/jsonlines", from_jsonlines),
        # float64 rows are cast to the graph's float32 input.
        (npy_body(ROWS), "application/x-npy", "application/x-npy", from_npy),
    ],
    ids=["csv", "json", "jsonlines", "npy"],
)
def test_single_output_equals_onnxruntime(
    runtime: Any, sessions: dict[str, Any], body: Any, content_type: str, accept: str, decode: Any
) -> None:
    got, answered = invoke(runtime, "onnx-reg", body, content_type, accept)
    assert answered == accept
    (want,) = own_output(sessions["reg"], ROWS)
    assert want.shape == (len(ROWS), 1)
    np.testing.assert_array_equal(np.asarray(decode(got), dtype=np.float32), want)


def test_two_outputs_by_name(runtime: Any, sessions: dict[str, Any]) -> None:
    labels, probabilities = own_output(sessions["clf"], FLOWERS)
    got, _ = invoke(runtime, "onnx-clf", csv_body(FLOWERS), "text/csv", "application/json")
    body = json.loads(got)
    assert set(body) == {"output_label", "output_probability"}
    assert body["output_label"] == labels.tolist()
    # JSON object keys are strings: {"0": p0, "1": p1, "2": p2} for onnxruntime's {0: p0, ...}.
    assert body["output_probability"] == [{str(k): v for k, v in row.items()} for row in probabilities]

    # JSON Lines: one object per row.
    got, _ = invoke(runtime, "onnx-clf", csv_body(FLOWERS), "text/csv", "application/jsonlines")
    lines = from_jsonlines(got)
    assert [line["output_label"] for line in lines] == labels.tolist()

    # CSV: label, then the probabilities in class order.
    got, _ = invoke(runtime, "onnx-clf", csv_body(FLOWERS), "text/csv", "text/csv")
    table = from_csv(got)
    np.testing.assert_array_equal(table[:, 0], labels)
    np.testing.assert_array_equal(
        np.float32(table[:, 1:]), [[row[k] for k in sorted(row)] for row in probabilities]
    )

    # NPY holds one array: asking for it is refused, naming what to ask for instead.
    status, message = model_error(runtime, "onnx-clf", csv_body(FLOWERS), "text/csv", "application/x-npy")
    assert status == 406 and "2 outputs (output_label, output_probability)" in message


def test_named_input_object(runtime: Any, sessions: dict[str, Any]) -> None:
    name = sessions["reg"].get_inputs()[0].name
    got, _ = invoke(
        runtime, "onnx-reg", json.dumps({name: ROWS.tolist()}), "application/json", "application/json"
    )
    np.testing.assert_array_equal(np.float32(json.loads(got)), own_output(sessions["reg"], ROWS)[0])
    status, message = model_error(runtime, "onnx-reg", json.dumps({"pixels": [1]}), "application/json")
    assert status == 400 and f"the model's inputs are {name}" in message


@pytest.mark.parametrize(
    ("body", "content_type", "problem"),
    [
        ("1,2,3\n4,5,6,7\n", "text/csv", "CSV row 2 has 4 values but the first row has 3"),
        (json.dumps(ROWS[:, :3].tolist()), "application/json", "each row must have 10 features, got 3"),
        ("[1, 2,", "application/json", "not valid JSON"),
    ],
    ids=["ragged-csv", "feature-count", "invalid-json"],
)
def test_bad_bodies(
    runtime: Any, sessions: dict[str, Any], body: str, content_type: str, problem: str
) -> None:
    status, message = model_error(runtime, "onnx-reg", body, content_type)
    assert status == 400 and problem in message


def test_unsupported_content_type(runtime: Any, sessions: dict[str, Any]) -> None:
    status, message = model_error(runtime, "onnx-reg", b"x", "application/x-protobuf")
    assert status == 415 and "not supported by the ONNX input_fn" in message


def test_missing_onnxruntime_fails_the_endpoint_naming_the_extra(
    sm: Any, sessions: dict[str, Any], tmp_path: Path
) -> None:
    # onnxruntime cannot be uninstalled inside a test, so the model's PYTHONPATH puts first a
    # stub package that fails to import exactly as a missing one does (ModuleNotFoundError for
    # "onnxruntime"). The worker never pre-imports onnxruntime (it starts threads at import), so
    # every worker, forked or spawned, really imports the stub.
    stubs = tmp_path / "stubs"
    (stubs / "onnxruntime").mkdir(parents=True)
    (stubs / "onnxruntime" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'onnxruntime'\", name='onnxruntime')\n"
    )
    path = os.pathsep.join(filter(None, [str(stubs), os.environ.get("PYTHONPATH")]))
    regressor = RandomForestRegressor(n_estimators=2, random_state=0).fit(X, Y)
    model = skl2onnx.to_onnx(regressor, X[:1].astype(np.float32)).SerializeToString()
    create_endpoint(sm, tmp_path, "onnx-missing", {"model.onnx": model}, environment={"PYTHONPATH": path})
    described = wait_for_status(sm, "onnx-missing", "Failed", timeout=60)
    reason = described["FailureReason"]
    assert "ONNX model found in" in reason
    assert 'onnxruntime is not installed: pip install "coldbrew[onnx]"' in reason
