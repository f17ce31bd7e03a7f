"""The inference toolkit in-process: which functions are used, how they are called, load errors."""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import joblib
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression, Ridge

from coldbrew.worker.context import Context
from coldbrew.worker.errors import InferenceError, ModelLoadError, describe, one_line
from coldbrew.worker.handlers import load_handler
from coldbrew.worker.messages import WorkerLaunch
from tests.worker.conftest import write_code


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """load_handler registers the user's module and code/ dir, as it should in a worker process."""
    monkeypatch.delenv("SAGEMAKER_PROGRAM", raising=False)
    monkeypatch.delenv("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", raising=False)
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def invoke(
    model_dir: Path, body: bytes, content_type: str | None = "text/csv", accept: str | None = None
) -> tuple[bytes, str]:
    handler = load_handler(str(model_dir))
    return handler.invoke(body, content_type, accept, Context(str(model_dir), request_id="r"))


def test_default_sklearn_pipeline(tmp_path: Path) -> None:
    X, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(X, y)
    joblib.dump(model, tmp_path / "model.joblib")
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in X[:2]).encode()
    assert invoke(tmp_path, body, accept="text/csv") == (
        "".join(f"{v!r}\n" for v in model.predict(X[:2]).tolist()).encode(),
        "text/csv",
    )


def test_default_accept_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_code(
        tmp_path,
        "def model_fn(d):\n    return None\n\ndef predict_fn(data, model):\n    return data.sum(axis=1)\n",
    )
    monkeypatch.setenv("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "text/csv")
    assert invoke(tmp_path, b"1,2\n3,4", accept="*/*") == (b"3.0\n7.0\n", "text/csv")


def test_plain_pickle_model(tmp_path: Path) -> None:
    model = LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0])
    (tmp_path / "model.pickle").write_bytes(pickle.dumps(model))
    expected = json.dumps(model.predict([[3.0]]).tolist()).encode()
    assert invoke(tmp_path, b"3", accept="application/json") == (expected, "application/json")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # positional context
        (
            "def transform_fn(model, body, content_type, accept, context):\n    return context.request_id",
            b"r",
        ),
        # keyword-only context
        (
            "def transform_fn(model, body, content_type, accept, *, context):\n    return context.request_id",
            b"r",
        ),
        # context with a default
        (
            "def transform_fn(model, body, content_type, accept, context=None):\n"
            "    return context.request_id",
            b"r",
        ),
        # no context
        ("def transform_fn(model, body, content_type, accept):\n    return 'plain'", b"plain"),
        # *args: called the toolkit's way, without context
        ("def transform_fn(*args):\n    return str(len(args))", b"4"),
        # a callable object
        (
            "class T:\n    def __call__(self, model, body, ct, accept, context):\n        return 'obj'\n"
            "transform_fn = T()",
            b"obj",
        ),
    ],
)
def test_context_is_passed_by_signature(tmp_path: Path, source: str, expected: bytes) -> None:
    write_code(tmp_path, "def model_fn(model_dir):\n    return None\n\n" + source + "\n")
    assert invoke(tmp_path, b"x", accept="text/plain")[0] == expected


def test_output_fn_results(tmp_path: Path) -> None:
    write_code(
        tmp_path,
        """
        def model_fn(model_dir):
            return None

        def transform_fn(model, body, content_type, accept):
            return {"str": "text", "bytes": b"raw", "tuple": (b"x", "application/x-thing"), "dict": {}}[body]
        """,
    )
    handler = load_handler(str(tmp_path))
    ctx = Context(str(tmp_path))
    assert handler.invoke(b"str", "text/csv", "text/csv", ctx) == (b"text", "text/csv")
    assert handler.invoke(b"bytes", "text/csv", "application/json, */*", ctx) == (b"raw", "application/json")
    assert handler.invoke(b"bytes", "text/csv", None, ctx) == (b"raw", "application/json")
    assert handler.invoke(b"tuple", "text/csv", "*/*", ctx) == (b"x", "application/x-thing")
    with pytest.raises(TypeError, match="transform_fn returned dict: return bytes, str or a"):
        handler.invoke(b"dict", "text/csv", None, ctx)


def test_text_bodies_arrive_as_str_and_others_as_bytes(tmp_path: Path) -> None:
    write_code(
        tmp_path,
        "def model_fn(d):\n    return None\n\n"
        "def transform_fn(m, body, content_type, accept):\n    return type(body).__name__\n",
    )
    handler = load_handler(str(tmp_path))
    ctx = Context(str(tmp_path))
    assert handler.invoke("é".encode("latin-1"), "text/csv; charset=latin-1", "text/plain", ctx)[0] == b"str"
    assert handler.invoke(b"{}", "application/json", "text/plain", ctx)[0] == b"str"
    assert handler.invoke(b"\x00", "application/octet-stream", "text/plain", ctx)[0] == b"bytes"
    with pytest.raises(InferenceError, match="does not decode") as info:
        handler.invoke(b"\xff", "application/json", "text/plain", ctx)
    assert info.value.status_code == 400


def test_load_hooks_run_in_order(tmp_path: Path) -> None:
    write_code(
        tmp_path,
        """
        calls = []

        def pre_model_fn(model_dir):
            calls.append("pre")

        def model_fn(model_dir):
            calls.append("model")
            return calls

        def model_warmup_fn(model_dir, model, context):
            calls.append("warmup")

        def transform_fn(model, body, content_type, accept):
            return ",".join(model)
        """,
    )
    assert invoke(tmp_path, b"", accept="text/plain")[0] == b"pre,model,warmup"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "def transform_fn(m, b, c, a):\n    pass\ndef input_fn(b, c):\n    pass\n",
            "code/inference.py defines transform_fn together with input_fn: define either transform_fn alone",
        ),
        (
            "def input_fn(body):\n    pass\n",
            r"input_fn\(body\) does not fit the toolkit: it must take \(input_data, content_type\)",
        ),
        ("def predict_fn(a, b, c, d):\n    pass\n", r"predict_fn\(a, b, c, d\) does not fit"),
        ("def output_fn(p, a, *, fmt):\n    pass\n", "output_fn.* does not fit"),
        ("predict_fn = 3\n", "predict_fn in code/inference.py is a int, not a function"),
        (
            "import not_installed_anywhere\n",
            "importing code/inference.py raised ModuleNotFoundError: No module named",
        ),
        ("def model_fn(:\n", "importing code/inference.py raised SyntaxError"),
        (
            "def model_fn(model_dir):\n    raise OSError('disk\\non fire')\n",
            "^model_fn raised OSError: disk on fire$",
        ),
    ],
)
def test_load_errors(tmp_path: Path, source: str, message: str) -> None:
    joblib.dump(Ridge(), tmp_path / "model.joblib")
    write_code(tmp_path, source)
    with pytest.raises(ModelLoadError, match=message):
        load_handler(str(tmp_path))


def test_model_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model directory .* does not exist"):
        load_handler(str(tmp_path / "absent"))
    (tmp_path / "a.joblib").write_bytes(b"x")
    (tmp_path / "b.pkl").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"Several model files .* \(a.joblib, b.pkl\)"):
        load_handler(str(tmp_path))
    (tmp_path / "b.pkl").unlink()
    with pytest.raises(ModelLoadError, match=r"scikit-learn model_fn raised|could not load .*a.joblib"):
        load_handler(str(tmp_path))


def test_sagemaker_program_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "serve.py")
    with pytest.raises(
        ModelLoadError, match=r"SAGEMAKER_PROGRAM is 'serve\.py' but .*code/serve\.py does not exist"
    ):
        load_handler(str(tmp_path))


def test_user_model_fn_in_a_directory_with_several_files(tmp_path: Path) -> None:
    # Ambiguity only matters to the default model_fn; a user's own one decides.
    (tmp_path / "a.pkl").write_bytes(b"x")
    (tmp_path / "b.pkl").write_bytes(b"x")
    write_code(
        tmp_path,
        "class M:\n    def predict(self, x):\n        return x[:, 0]\n\ndef model_fn(d):\n    return M()\n",
    )
    assert invoke(tmp_path, b"5,6", accept="text/csv")[0] == b"5.0\n"


def test_describe_and_one_line() -> None:
    assert describe(ValueError("x")) == (500, "ValueError: x")
    assert describe(InferenceError(422, "bad")) == (422, "InferenceError: bad")
    assert describe(InferenceError(200, "not an error")) == (500, "InferenceError: not an error")

    class Foreign(Exception):
        status_code = 404
        message = "gone"

    assert describe(Foreign()) == (404, "Foreign: gone")
    assert one_line(RuntimeError("a\n  b")) == "RuntimeError: a b"
    assert one_line(KeyError()) == "KeyError"


def test_context_custom_attributes_are_checked() -> None:
    context = Context("/m")
    context.response_custom_attributes = "a=1"
    assert context.response_custom_attributes == "a=1"
    with pytest.raises(ValueError, match="printable ASCII"):
        context.set_response_custom_attributes("line\r\nbreak")
    with pytest.raises(ValueError, match="at most 1024"):
        context.set_response_custom_attributes("x" * 1025)


def test_worker_launch_is_validated_and_survives_the_wire() -> None:
    launch = WorkerLaunch(model_dir="/m", socket_path="/s", env={"A": "1"})
    assert WorkerLaunch.model_validate_json(launch.encoded()) == launch
    assert pickle.loads(pickle.dumps(launch)) == launch
    with pytest.raises(ValueError, match="exactly one of socket_path and port"):
        WorkerLaunch(model_dir="/m")
    with pytest.raises(ValueError, match="exactly one"):
        WorkerLaunch(model_dir="/m", socket_path="/s", port=1)
    with pytest.raises(ValueError, match="environment_concurrency"):
        WorkerLaunch(model_dir="/m", port=0, environment_concurrency=0)
    with pytest.raises(ValueError, match="port"):
        WorkerLaunch(model_dir="/m", port=65536)
    with pytest.raises(ValueError, match="max_concurrency"):  # an unknown field is refused
        WorkerLaunch.model_validate_json(b'{"model_dir": "/m", "port": 0, "max_concurrency": 2}')
