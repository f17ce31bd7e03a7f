"""Zygotes in an environment like a SageMaker user's (issue 18): the test environment's packages
(torch, transformers, sentence-transformers) plus the SageMaker SDK, pandas and pyarrow.

There, scikit-learn imports pandas, pandas imports pyarrow, and pyarrow's jemalloc started a
thread as it loaded: the scikit-learn and PyTorch zygotes refused to start and every cold start
was a fresh interpreter (1.1-1.5 s), with one warning at start-up. The environment is
``.sdk-envs/real``, built by ``python -m tests.sdk.environments`` from
``tests/sdk/requirements-real.txt``.
"""

from __future__ import annotations

import io
import json
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.sdk.environments import python_for
from tests.support import REPO, ColdbrewServer, deploy_serverless, tar_gz, wait_for_status, zygote_of

try:
    REAL_PYTHON: Path | None = python_for("real")
except RuntimeError:
    REAL_PYTHON = None

pytestmark = pytest.mark.skipif(
    REAL_PYTHON is None,
    reason="the .sdk-envs/real environment (SageMaker SDK, pandas, pyarrow) is not built: "
    "run `python -m tests.sdk.environments`",
)

# Every runtime's zygote, started by the supervisor in the real environment; its states as JSON.
ALL_ZYGOTES = textwrap.dedent("""
    import asyncio, importlib.util, json, pathlib, sys, tempfile
    from coldbrew.backends.zygotes import Zygotes
    from coldbrew.worker.runtimes import RUNTIME_PRELOAD

    async def main():
        zygotes = Zygotes(pathlib.Path(tempfile.mkdtemp()), RUNTIME_PRELOAD, 600.0)
        for runtime in RUNTIME_PRELOAD:
            await zygotes.wait_ready(runtime, 600.0)
        states = [s.__dict__ | {"left_out": [m.model_dump() for m in s.left_out]} for s in zygotes.states()]
        await zygotes.close()
        installed = [m for m in ("pandas", "pyarrow", "sagemaker", "torch", "transformers")
                     if importlib.util.find_spec(m) is not None]
        print(json.dumps({"states": states, "installed": installed}))

    asyncio.run(main())
""")

# What the worker sees: its parent (the zygote, if forked) and whether pyarrow came with it.
REPORT = textwrap.dedent("""
    import json, os, sys
    import joblib

    def model_fn(model_dir):
        return joblib.load(os.path.join(model_dir, "model.joblib"))

    def input_fn(body, content_type):
        return json.loads(body)

    def predict_fn(rows, model):
        return {
            "predictions": model.predict(rows).tolist(),
            "ppid": os.getppid(),
            "pyarrow": "pyarrow" in sys.modules,
            "pandas": "pandas" in sys.modules,
            "threads": len(os.listdir("/proc/self/task")),
        }

    def output_fn(prediction, accept):
        return json.dumps(prediction), "application/json"
""")


def test_every_runtime_zygote_starts_whole_in_the_real_environment() -> None:
    assert REAL_PYTHON is not None
    done = subprocess.run(
        [str(REAL_PYTHON), "-c", ALL_ZYGOTES], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["installed"] == ["pandas", "pyarrow", "sagemaker", "torch", "transformers"]
    states = {s["runtime"]: s for s in report["states"]}
    assert set(states) == {"sklearn", "xgboost", "lightgbm", "onnx", "pytorch", "generic"}
    for runtime, state in states.items():
        # Whole: nothing of its preload left out (pyarrow's thread is turned off, not dodged).
        assert (runtime, state["state"], state["left_out"]) == (runtime, "ready", [])
    assert "sklearn.ensemble" in states["sklearn"]["modules"]
    assert "torch" in states["pytorch"]["modules"]


def _scrape(server: ColdbrewServer) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdbrewServer]:
    assert REAL_PYTHON is not None
    server = ColdbrewServer(tmp_path_factory.mktemp("real") / "data", python=REAL_PYTHON).start(timeout=120)
    yield server
    server.stop()


def test_a_model_is_served_from_the_zygote_in_the_real_environment(
    real_server: ColdbrewServer, model_archive: tuple[Path, Any], tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    joblib.dump(model_archive[1], buffer)
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(tar_gz({"model.joblib": buffer.getvalue(), "code/inference.py": REPORT.encode()}))
    sm, runtime = real_server.client(), real_server.client("sagemaker-runtime")
    deploy_serverless(sm, "real-env", archive.as_uri(), memory=1024)
    wait_for_status(sm, "real-env", "InService", timeout=120)
    response = runtime.invoke_endpoint(
        EndpointName="real-env", Body=json.dumps([[0.01] * 10]), ContentType="application/json"
    )
    answer = json.loads(response["Body"].read())
    assert len(answer["predictions"]) == 1
    assert real_server.process is not None
    zygotes = {
        c.pid: c.cmdline()
        for c in psutil.Process(real_server.process.pid).children()
        if "coldbrew.worker.zygote" in " ".join(c.cmdline())
    }
    # Forked by the scikit-learn zygote, which holds pandas and pyarrow (and no thread of theirs).
    assert zygote_of(answer["ppid"]) in zygotes
    assert answer["pandas"] and answer["pyarrow"]

    deadline = time.monotonic() + 30
    samples = _scrape(real_server)
    while not any(n == "coldbrew_memory_budget_helpers_megabytes" and v > 0 for n, _, v in samples):
        assert time.monotonic() < deadline, "the zygotes' memory never reached the budget"
        time.sleep(0.2)
        samples = _scrape(real_server)
    states = {(lab["runtime"], lab["state"]) for n, lab, _ in samples if n == "coldbrew_zygote_state"}
    assert ("sklearn", "ready") in states
    assert not [labels for n, labels, _ in samples if n == "coldbrew_zygote_left_out_import_seconds"]
    helpers_mb = next(v for n, _, v in samples if n == "coldbrew_memory_budget_helpers_megabytes")
    resident = next(v for n, _, v in samples if n == "coldbrew_zygote_resident_bytes")
    # The budget's helpers are the zygotes' resident memory (read a moment apart: within 10%).
    assert helpers_mb > 50
    assert abs(helpers_mb - resident / 2**20) <= 0.1 * helpers_mb
