"""The worker as the gateway sees it: a real ``python -m coldbrew.worker`` process over a socket."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

from tests.worker.conftest import Worker, read_status, start_worker, worker_env, write_code

CSV_HEADERS = {"content-type": "text/csv"}


def csv_body(rows: np.ndarray) -> bytes:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()


def parse_csv(text: str) -> list[list[float]]:
    return [[float(v) for v in line.split(",")] for line in text.splitlines()]


# --- a default scikit-learn model, one worker for the module ---------------------------------------


@pytest.fixture(scope="module")
def diabetes() -> tuple[RandomForestRegressor, np.ndarray]:
    X, y = load_diabetes(return_X_y=True)
    return RandomForestRegressor(n_estimators=5, random_state=0).fit(X, y), X


@pytest.fixture(scope="module")
def regressor_dir(
    tmp_path_factory: pytest.TempPathFactory, diabetes: tuple[RandomForestRegressor, np.ndarray]
) -> Path:
    model_dir = tmp_path_factory.mktemp("regressor")
    joblib.dump(diabetes[0], model_dir / "model.joblib")
    return model_dir


@pytest.fixture(scope="module")
def regressor(regressor_dir: Path, socket_dir: Path) -> Iterator[Worker]:
    worker = start_worker(regressor_dir, socket_dir)
    yield worker
    worker.stop()


def test_status_line_reports_ready_pid_and_setup_time(regressor: Worker) -> None:
    assert regressor.status is not None
    assert regressor.status["ready"] is True
    assert regressor.status["pid"] == regressor.proc.pid
    assert isinstance(regressor.status["setup_ms"], float) and regressor.status["setup_ms"] > 0
    assert regressor.client().get("/ping").status_code == 200


def test_csv_in_json_out_matches_predict(
    regressor: Worker, diabetes: tuple[RandomForestRegressor, np.ndarray]
) -> None:
    model, X = diabetes
    response = regressor.client().post("/invocations", content=csv_body(X[:7]), headers=CSV_HEADERS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == model.predict(X[:7]).tolist()


@pytest.mark.parametrize(
    "payload",
    [
        "rows",
        "instances",
        "inputs",
    ],
)
def test_json_in_csv_out_matches_predict(
    regressor: Worker, diabetes: tuple[RandomForestRegressor, np.ndarray], payload: str
) -> None:
    model, X = diabetes
    rows = X[10:15].tolist()
    body = rows if payload == "rows" else {payload: rows}
    response = regressor.client().post("/invocations", json=body, headers={"accept": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv"
    assert [row[0] for row in parse_csv(response.text)] == model.predict(X[10:15]).tolist()


def test_single_json_row_and_npy(
    regressor: Worker, diabetes: tuple[RandomForestRegressor, np.ndarray]
) -> None:
    model, X = diabetes
    client = regressor.client()
    single = client.post("/invocations", json=X[3].tolist(), headers={"accept": "*/*"})
    assert single.json() == model.predict(X[3:4]).tolist()

    buffer = io.BytesIO()
    np.save(buffer, X[:4])
    npy = client.post(
        "/invocations",
        content=buffer.getvalue(),
        headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
    )
    assert npy.headers["content-type"] == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(npy.content)), model.predict(X[:4]))


@pytest.mark.parametrize(
    ("body", "headers", "status", "fragment"),
    [
        (b"1,2,3", {"content-type": "text/plain"}, 415, "Content-Type 'text/plain' is not supported"),
        (b"1,2,3", {}, 415, "application/octet-stream"),
        (b"1,2,3", {"content-type": "text/csv", "accept": "image/png"}, 406, "Accept 'image/png'"),
        (b"1,2,3\n4,5\n", CSV_HEADERS, 400, "CSV row 2 has 2 values but the first row has 3"),
        (b"age,sex\n1,2\n", CSV_HEADERS, 400, "CSV row 1, column 1: 'age' is not a number"),
        (b"[[1, 2", {"content-type": "application/json"}, 400, "not valid JSON"),
        (b'{"rows": []}', {"content-type": "application/json"}, 400, '"instances" or "inputs"'),
        (b"1,2,3", CSV_HEADERS, 400, "each row must have 10 features, got 3"),
        (b"", CSV_HEADERS, 400, "the request body is empty"),
    ],
)
def test_bad_requests_get_4xx_naming_the_problem(
    regressor: Worker, body: bytes, headers: dict[str, str], status: int, fragment: str
) -> None:
    response = regressor.client().post("/invocations", content=body, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert fragment in response.json()["message"]


def test_routes_and_methods(regressor: Worker) -> None:
    client = regressor.client()
    assert client.get("/invocations").status_code == 405
    assert client.post("/ping").status_code == 405
    assert client.get("/models").status_code == 404
    assert client.head("/ping").status_code == 200


# --- user code ------------------------------------------------------------------------------------


def test_single_pickle_file_classifier_with_multi_output_csv(
    tmp_path: Path, socket_dir: Path, workers: list[Worker]
) -> None:
    X, y = load_iris(return_X_y=True)
    classifier = LogisticRegression(max_iter=500).fit(X, y)
    multi = LinearRegression().fit(X[:, :2], X[:, 2:])  # two outputs per row
    (tmp_path / "clf").mkdir()
    (tmp_path / "clf" / "iris.pkl").write_bytes(pickle.dumps(classifier))
    (tmp_path / "multi").mkdir()
    joblib.dump(multi, tmp_path / "multi" / "model.pkl")
    workers.append(clf := start_worker(tmp_path / "clf", socket_dir))
    workers.append(mo := start_worker(tmp_path / "multi", socket_dir))

    labels = clf.client().post(
        "/invocations", content=csv_body(X[::30]), headers={"accept": "text/csv", **CSV_HEADERS}
    )
    assert labels.text == "".join(f"{label}\n" for label in classifier.predict(X[::30]))

    rows = mo.client().post(
        "/invocations", content=csv_body(X[:3, :2]), headers={"accept": "text/csv", **CSV_HEADERS}
    )
    assert parse_csv(rows.text) == multi.predict(X[:3, :2]).tolist()


CUSTOM = """
    import json
    import os

    import joblib
    from helpers import scale_of  # a sibling module in code/


    def model_fn(model_dir, context):
        assert context.model_dir == model_dir and context.custom_attributes is None
        return joblib.load(os.path.join(model_dir, "custom.joblib"))


    def input_fn(input_data, content_type, context):
        assert isinstance(input_data, str) and content_type == "application/json"
        return {"rows": json.loads(input_data)["features"], "scale": scale_of(context.custom_attributes)}


    def predict_fn(data, model):  # no context: decided per function
        return model.predict(data["rows"]) * data["scale"]


    def output_fn(prediction, accept, context):
        context.set_response_custom_attributes(f"rows={len(prediction)},id={context.request_id}")
        body = json.dumps({"predictions": prediction.tolist(), "accept": accept})
        return body, "application/vnd.custom+json"
"""

HELPERS = """
    def scale_of(attributes):
        return float(dict(kv.split("=") for kv in attributes.split(","))["scale"]) if attributes else 1.0
"""


def test_custom_handlers_with_context_and_custom_attributes(
    tmp_path: Path,
    socket_dir: Path,
    workers: list[Worker],
    diabetes: tuple[RandomForestRegressor, np.ndarray],
) -> None:
    model, X = diabetes
    joblib.dump(model, tmp_path / "custom.joblib")  # a name no default would pick up
    write_code(tmp_path, CUSTOM)
    write_code(tmp_path, HELPERS, "helpers.py")
    workers.append(worker := start_worker(tmp_path, socket_dir))
    assert worker.status and worker.status["ready"], worker.status

    response = worker.client().post(
        "/invocations",
        json={"features": X[:3].tolist()},
        headers={"x-amzn-sagemaker-custom-attributes": "scale=2,other=x", "x-amzn-requestid": "req-1"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.custom+json"
    assert response.headers["x-amzn-sagemaker-custom-attributes"] == "rows=3,id=req-1"
    assert response.json() == {
        "predictions": (model.predict(X[:3]) * 2).tolist(),
        "accept": "application/json",
    }

    plain = worker.client().post(
        "/invocations", json={"features": X[:1].tolist()}, headers={"accept": "text/csv"}
    )
    assert plain.json()["predictions"] == model.predict(X[:1]).tolist()
    assert plain.json()["accept"] == "text/csv"


def test_transform_fn_from_sagemaker_program(tmp_path: Path, socket_dir: Path, workers: list[Worker]) -> None:
    write_code(
        tmp_path,
        """
        def model_fn(model_dir):
            return {"factor": 10}

        def transform_fn(model, body, content_type, accept):
            values = [float(v) * model["factor"] for v in body.split(",")]
            return ",".join(str(v) for v in values)
        """,
        name="serve.py",
    )
    workers.append(worker := start_worker(tmp_path, socket_dir, env={"SAGEMAKER_PROGRAM": "serve.py"}))
    response = worker.client().post(
        "/invocations", content=b"1,2.5", headers={"content-type": "text/csv", "accept": "text/csv"}
    )
    assert response.status_code == 200
    assert response.text == "10.0,25.0"
    assert response.headers["content-type"] == "text/csv"  # a bare body takes the requested type


def test_input_fn_only_keeps_default_predict_and_output(
    tmp_path: Path,
    socket_dir: Path,
    workers: list[Worker],
    diabetes: tuple[RandomForestRegressor, np.ndarray],
) -> None:
    model, X = diabetes
    joblib.dump(model, tmp_path / "model.joblib")
    write_code(
        tmp_path,
        """
        import numpy as np

        def input_fn(input_data, content_type):
            assert content_type == "text/x-pipes" and isinstance(input_data, bytes)
            lines = input_data.decode().splitlines()
            return np.array([[float(v) for v in line.split("|")] for line in lines])
        """,
    )
    workers.append(worker := start_worker(tmp_path, socket_dir))
    body = "\n".join("|".join(repr(float(v)) for v in row) for row in X[:4]).encode()
    response = worker.client().post("/invocations", content=body, headers={"content-type": "text/x-pipes"})
    assert response.status_code == 200, response.text
    assert response.json() == model.predict(X[:4]).tolist()


ERRORS = """
    from coldbrew.worker.errors import InferenceError


    class ToolkitStyleError(Exception):  # shaped like sagemaker_inference's BaseInferenceToolkitError
        def __init__(self, status_code, message):
            super().__init__(message)
            self.status_code = status_code
            self.message = message


    def model_fn(model_dir):
        return None


    def predict_fn(data, model, context):
        kind = context.custom_attributes
        if kind == "boom":
            raise RuntimeError("boom at row 3")
        if kind == "invalid":
            raise InferenceError(422, "feature 2 must be positive")
        if kind == "toolkit":
            raise ToolkitStyleError(409, "model is busy")
        return [1.0]
"""


@pytest.mark.parametrize(
    ("attributes", "status", "message"),
    [
        ("boom", 500, "RuntimeError: boom at row 3"),
        ("invalid", 422, "InferenceError: feature 2 must be positive"),
        ("toolkit", 409, "ToolkitStyleError: model is busy"),
    ],
)
def test_handler_exceptions_become_json_errors(
    errors_worker: Worker, attributes: str, status: int, message: str
) -> None:
    response = errors_worker.client().post(
        "/invocations",
        content=b"1",
        headers={**CSV_HEADERS, "x-amzn-sagemaker-custom-attributes": attributes},
    )
    assert response.status_code == status
    assert response.json() == {"message": message}  # and nothing else: no traceback
    # The worker survives and keeps serving.
    ok = errors_worker.client().post("/invocations", content=b"1", headers=CSV_HEADERS)
    assert ok.json() == [1.0]


@pytest.fixture(scope="module")
def errors_worker(tmp_path_factory: pytest.TempPathFactory, socket_dir: Path) -> Iterator[Worker]:
    model_dir = tmp_path_factory.mktemp("errors")
    write_code(model_dir, ERRORS)
    worker = start_worker(model_dir, socket_dir)
    yield worker
    worker.stop()


# --- setup failures -------------------------------------------------------------------------------


def test_model_fn_failure_reports_not_ready_and_exits_1(
    tmp_path: Path, socket_dir: Path, workers: list[Worker]
) -> None:
    write_code(tmp_path, "def model_fn(model_dir):\n    raise ValueError('bad file')\n")
    workers.append(worker := start_worker(tmp_path, socket_dir))
    assert worker.status == {"ready": False, "error": "model_fn raised ValueError: bad file"}
    assert worker.proc.wait(5) == 1


def test_missing_model_file_is_a_clear_error(tmp_path: Path, socket_dir: Path, workers: list[Worker]) -> None:
    (tmp_path / "README.txt").write_text("no model here")
    workers.append(worker := start_worker(tmp_path, socket_dir))
    assert worker.status is not None and worker.status["ready"] is False
    error = worker.status["error"]
    assert error.startswith(f"No model file found in {tmp_path}: expected model.joblib, model.pkl")
    assert error.endswith("or a code/inference.py with model_fn")
    assert worker.proc.wait(5) == 1


# --- process lifecycle ----------------------------------------------------------------------------


def test_sigterm_exits_promptly_and_sigint_is_ignored(
    tmp_path: Path, socket_dir: Path, workers: list[Worker]
) -> None:
    write_code(
        tmp_path,
        "def model_fn(model_dir):\n    return None\n\ndef transform_fn(m, b, c, a):\n    return b'ok'\n",
    )
    workers.append(worker := start_worker(tmp_path, socket_dir))
    client = worker.client()
    assert client.get("/ping").status_code == 200  # an open keep-alive connection during shutdown
    worker.proc.send_signal(signal.SIGINT)
    assert client.post("/invocations", content=b"x").text == "ok"
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(1) == 0
    assert time.monotonic() - started < 1
    assert worker.socket_path is not None and not worker.socket_path.exists()


def test_worker_exits_when_its_parent_dies(tmp_path: Path, socket_dir: Path) -> None:
    write_code(tmp_path, "def model_fn(model_dir):\n    return None\n")
    # An intermediate parent starts the worker, reports its pid and exits without stopping it.
    launcher = f"""
import os, subprocess, sys
read, write = os.pipe()
subprocess.Popen([sys.executable, "-m", "coldbrew.worker", "--model-dir", {str(tmp_path)!r},
                  "--socket", {str(socket_dir / "orphan.sock")!r}, "--status-fd", str(write)],
                 pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
os.close(write)
print(os.read(read, 4096).decode(), end="", flush=True)
"""
    out = subprocess.run(
        [sys.executable, "-c", launcher], env=worker_env(), capture_output=True, timeout=30, check=True
    )
    pid = json.loads(out.stdout)["pid"]
    deadline = time.monotonic() + 3
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(pid)
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "the orphaned worker kept running"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_run_worker_in_a_forked_child(
    regressor_dir: Path, socket_dir: Path, diabetes: tuple[RandomForestRegressor, np.ndarray]
) -> None:
    from coldbrew.worker.main import run_worker
    from coldbrew.worker.messages import WorkerLaunch

    model, X = diabetes
    launch = WorkerLaunch(
        model_dir=str(regressor_dir),
        socket_path=str(socket_dir / "forked.sock"),
        env={"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"},
    )
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(read)
            run_worker(launch, write)
        finally:
            os._exit(99)
    os.close(write)
    try:
        status = read_status(read)
        assert status is not None and status["ready"] is True and status["pid"] == pid
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=launch.socket_path), base_url="http://worker"
        ) as client:
            response = client.post("/invocations", content=csv_body(X[:5]), headers=CSV_HEADERS)
        assert response.headers["content-type"] == "text/csv"  # launch.env reached the child
        assert [row[0] for row in parse_csv(response.text)] == model.predict(X[:5]).tolist()
        assert os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") is None  # and not the parent
    finally:
        os.close(read)
        os.kill(pid, signal.SIGTERM)
        _, code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0


def test_launch_message_on_stdin(tmp_path: Path, socket_dir: Path) -> None:
    """How the gateway starts a fresh worker: the same WorkerLaunch a zygote gets, on stdin."""
    from coldbrew.worker.messages import WorkerLaunch

    write_code(
        tmp_path,
        """
        import os

        def model_fn(model_dir):
            return None

        def transform_fn(model, body, content_type, accept):
            return f"{os.environ['FLAVOUR']} {os.readlink('/proc/self/fd/0')}", "text/plain"
        """,
    )
    launch = WorkerLaunch(
        model_dir=str(tmp_path), socket_path=str(socket_dir / "launched.sock"), env={"FLAVOUR": "mint"}
    )
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "coldbrew.worker", "--launch", "--status-fd", str(write)],
        stdin=subprocess.PIPE,
        pass_fds=(write,),
        env=worker_env(),
    )
    os.close(write)
    try:
        assert proc.stdin is not None
        proc.stdin.write(launch.encoded())
        proc.stdin.close()
        status = read_status(read)
        assert status is not None and status["ready"] is True and status["pid"] == proc.pid
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=launch.socket_path), base_url="http://worker"
        ) as client:
            # The model's environment arrived, and the model sees the stdin a forked worker has.
            assert client.post("/invocations", content=b"x").text == "mint /dev/null"
    finally:
        os.close(read)
        proc.terminate()
        proc.wait(5)


def test_a_bad_launch_message_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "coldbrew.worker", "--launch", "--status-fd", "2"],
        input=b'{"model_dir": "/m", "max_concurrency": 2}',
        env=worker_env(),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"max_concurrency" in result.stderr and b"Extra inputs are not permitted" in result.stderr


def test_environment_concurrency_predicts_in_parallel(
    tmp_path: Path, socket_dir: Path, workers: list[Worker]
) -> None:
    write_code(
        tmp_path,
        """
        import time

        def model_fn(model_dir):
            return None

        def transform_fn(model, body, content_type, accept):
            time.sleep(0.3)
            return b"done"
        """,
    )
    workers.append(worker := start_worker(tmp_path, socket_dir, "--environment-concurrency", "4"))
    clients = [worker.client() for _ in range(4)]
    results: list[str] = []

    def call(client: httpx.Client) -> None:
        results.append(client.post("/invocations", content=b"x").text)

    threads = [threading.Thread(target=call, args=(c,)) for c in clients]
    started = time.monotonic()
    for t in threads:
        t.start()
    # /ping answers while every predict thread is busy.
    time.sleep(0.1)
    assert worker.client().get("/ping").status_code == 200
    assert time.monotonic() - started < 0.3
    for t in threads:
        t.join()
    assert results == ["done"] * 4
    assert time.monotonic() - started < 0.9  # serially this would take 1.2 s


def test_tcp_port_zero_reports_the_bound_port(
    tmp_path: Path, socket_dir: Path, workers: list[Worker]
) -> None:
    write_code(
        tmp_path,
        "def model_fn(model_dir):\n    return 'm'\n\n"
        "def transform_fn(m, b, c, a):\n    return m, 'text/plain'\n",
    )
    workers.append(worker := start_worker(tmp_path, socket_dir, tcp=True))
    assert worker.status is not None and worker.status["port"] > 0
    with httpx.Client(base_url=f"http://127.0.0.1:{worker.status['port']}") as client:
        assert client.post("/invocations", content=b"x").text == "m"
