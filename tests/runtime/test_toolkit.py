"""Worker-level tests of the toolkit pieces this runtime work added: JSON Lines and libsvm
bodies, the framework loaders' file formats, the missing-library message, and entry points."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_diabetes

from coldbrew.worker import codecs, container, libsvm
from coldbrew.worker.context import Context
from coldbrew.worker.errors import BadRequest, ModelLoadError, NotAcceptable, UnsupportedMediaType
from coldbrew.worker.frameworks import onnx as onnx_framework
from coldbrew.worker.frameworks.requires import require
from coldbrew.worker.handlers import load_handler

X, Y = load_diabetes(return_X_y=True)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SAGEMAKER_PROGRAM",
        "SAGEMAKER_SUBMIT_DIRECTORY",
        "COLDBREW_IMAGE",
        "COLDBREW_RUNTIME",
        "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT",
    ):
        monkeypatch.delenv(name, raising=False)


# --- JSON Lines -----------------------------------------------------------------------------------


def test_jsonlines_rows_objects_and_aliases() -> None:
    body = '[1, 2]\n\n{"features": [3, 4]}\n{"instances": [[5, 6], [7, 8]]}\n'
    assert codecs.decode(body.encode(), "application/jsonlines").tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert codecs.decode(b"[1, 2]", "application/x-jsonlines; charset=utf-8").tolist() == [[1, 2]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]\n[3]", "JSON Lines line 2 has 1 value but the first row has 2"),
        (b"[1, 2]\n{oops", "JSON Lines line 2 is not valid JSON"),
        (b'{"x": [1]}', 'line 1 is an object without a "features"'),
        (b"7", "line 1 is not a non-empty list"),
        (b'["a", 1]', "must hold only numbers"),
        (b"\n\n", "has no rows"),
    ],
)
def test_bad_jsonlines(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        codecs.decode(body, "application/jsonlines")


def test_encode_jsonlines() -> None:
    assert codecs.encode(np.array([1.5, 2.0]), "application/jsonlines") == (
        b"1.5\n2.0\n",
        "application/jsonlines",
    )
    assert codecs.encode(np.array([[1, 2], [3, 4]]), "application/jsonlines")[0] == b"[1, 2]\n[3, 4]\n"
    assert codecs.encode({"a": 1}, "application/jsonlines")[0] == b'{"a": 1}\n'
    assert codecs.negotiate("application/x-jsonlines") == "application/jsonlines"


# --- libsvm ---------------------------------------------------------------------------------------


def test_libsvm_labels_optional_qid_skipped() -> None:
    matrix = libsvm.decode("1 0:1.5 2:3\n\n 1:-2 qid:7\n", num_features=4)
    assert matrix.shape == (2, 4)
    assert matrix.toarray().tolist() == [[1.5, 0, 3, 0], [0, -2, 0, 0]]
    assert libsvm.decode(b"0:1 5:2").shape == (1, 6)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1 0:x", "libsvm line 1: '0:x' is not index:value"),
        ("cat 0:1", "'cat' is neither a label nor index:value"),
        ("1 -1:2", "'-1:2' is not index:value"),
        ("1 0:1\n2 9:1", "line 2: feature index 9 is out of range: the model has 4 features"),
        ("\n", "has no rows"),
    ],
)
def test_bad_libsvm(body: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        libsvm.decode(body, num_features=4)


# --- framework loading, in process ----------------------------------------------------------------


def _invoke(
    model_dir: Path, body: str, content_type: str = "text/csv", accept: str = "application/json"
) -> object:
    handler = load_handler(str(model_dir))
    out, _ = handler.invoke(body.encode(), content_type, accept, Context(str(model_dir)))
    return json.loads(out)


def _csv(rows: np.ndarray) -> str:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows)


@pytest.mark.parametrize("form", ["json-in-xgboost-model", "ubj", "pickled-booster", "bst"])
def test_xgboost_model_files(tmp_path: Path, form: str) -> None:
    xgb = pytest.importorskip("xgboost")
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(X, Y), num_boost_round=5)
    if form == "json-in-xgboost-model":
        booster.save_model(str(tmp_path / "saved.json"))
        (tmp_path / "saved.json").rename(tmp_path / "xgboost-model")
    elif form == "ubj":
        booster.save_model(str(tmp_path / "model.ubj"))
    elif form == "bst":
        booster.save_model(str(tmp_path / "model.ubj"))
        (tmp_path / "model.ubj").rename(tmp_path / "model.bst")
    else:  # SageMaker's XGBoost 0.90-1.2 pickled the Booster into xgboost-model
        (tmp_path / "xgboost-model").write_bytes(pickle.dumps(booster))
    got = _invoke(tmp_path, _csv(X[:3]))
    np.testing.assert_array_equal(np.asarray(got, dtype=np.float32), booster.predict(xgb.DMatrix(X[:3])))


def test_xgboost_damaged_file_says_what_to_do(tmp_path: Path) -> None:
    pytest.importorskip("xgboost")
    (tmp_path / "xgboost-model").write_bytes(b"binf\x00\x00garbage")
    with pytest.raises(
        ModelLoadError, match=r"could not load .*xgboost-model as an XGBoost model.*legacy binary"
    ):
        load_handler(str(tmp_path))


def test_lightgbm_file_is_sniffed(tmp_path: Path) -> None:
    lgb = pytest.importorskip("lightgbm")
    model = lgb.train({"verbose": -1}, lgb.Dataset(X, Y), num_boost_round=5)
    model.save_model(str(tmp_path / "model.txt"))
    (tmp_path / "notes.txt").write_text("tree\nnot really\n")
    np.testing.assert_array_equal(_invoke(tmp_path, _csv(X[:2])), model.predict(X[:2]))


def test_sagemaker_default_accept_only_for_the_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xgb = pytest.importorskip("xgboost")
    xgb.train({}, xgb.DMatrix(X, Y), num_boost_round=2).save_model(str(tmp_path / "model.json"))
    assert load_handler(str(tmp_path)).default_accept == "application/json"
    monkeypatch.setenv("COLDBREW_IMAGE", "1.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1")
    assert load_handler(str(tmp_path)).default_accept == "text/csv"


# --- ONNX outputs, without a model ------------------------------------------------------------------


def test_onnx_output_fn_shapes() -> None:
    outputs = {"label": np.array([1, 0]), "scores": np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)}
    assert onnx_framework.output_fn(outputs, "text/csv")[0] == b"1,0.25,0.75\n0,0.5,0.5\n"
    lines = onnx_framework.output_fn(outputs, "application/jsonlines")[0].decode().splitlines()
    assert json.loads(lines[1]) == {"label": 0, "scores": [0.5, 0.5]}
    with pytest.raises(NotAcceptable, match="2 outputs"):
        onnx_framework.output_fn(outputs, "application/x-npy")
    body, kind = onnx_framework.output_fn(np.arange(3), "application/x-npy")
    assert kind == "application/x-npy" and np.load(io.BytesIO(body)).tolist() == [0, 1, 2]
    with pytest.raises(UnsupportedMediaType, match="ONNX input_fn"):
        onnx_framework.input_fn(b"x", "text/libsvm")


# --- missing libraries and entry points -------------------------------------------------------------


def test_require_names_the_extra() -> None:
    with pytest.raises(ModelLoadError) as info:
        require("coldbrew_no_such_lib", framework="XGBoost", model_dir="/x", extra="xgboost")
    assert str(info.value) == (
        "XGBoost model found in /x, but coldbrew_no_such_lib is not installed: "
        'pip install "coldbrew[xgboost]"'
    )


def test_entry_point_locations(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "src").mkdir()
    default = container.entry_point(str(tmp_path), {})
    assert (default.path, default.named, default.label) == (
        tmp_path / "code" / "inference.py",
        False,
        "code/inference.py",
    )
    mapped = container.entry_point(
        str(tmp_path), {"SAGEMAKER_PROGRAM": "serve", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
    )
    assert mapped.path == tmp_path / "code" / "serve.py" and mapped.named
    local = container.entry_point(str(tmp_path), {"SAGEMAKER_SUBMIT_DIRECTORY": (tmp_path / "src").as_uri()})
    assert local.code_dir == tmp_path / "src"
    with pytest.raises(ModelLoadError, match="downloads when the endpoint is created"):
        container.entry_point(str(tmp_path), {"SAGEMAKER_SUBMIT_DIRECTORY": "s3://b/sourcedir.tar.gz"})
    with pytest.raises(ModelLoadError, match="is not a directory"):
        container.entry_point(str(tmp_path), {"SAGEMAKER_SUBMIT_DIRECTORY": str(tmp_path / "nope")})
