from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

import joblib
import pytest

from tests.support import tar_gz

# A model with code/inference.py that echoes custom attributes, can sleep, fail, or hog memory,
# driven by the JSON request: {"rows": [[...]], "sleep": s, "spin": cpu_s, "fail": msg, "hog_mb": n}.
INFERENCE_PY = textwrap.dedent("""
    import json
    import os
    import time

    import joblib
    import numpy as np

    def model_fn(model_dir):
        time.sleep(float(os.environ.get("LOAD_SLEEP_S", "0")))
        if os.path.exists(os.environ.get("FAIL_IF_EXISTS", "/nonexistent")):
            raise RuntimeError("the weights went missing")
        if os.environ.get("FAIL_TO_LOAD"):
            raise RuntimeError(os.environ["FAIL_TO_LOAD"])
        return joblib.load(os.path.join(model_dir, "model.joblib"))

    def input_fn(body, content_type, context):
        return json.loads(body)

    def predict_fn(data, model, context):
        if data.get("sleep"):
            time.sleep(data["sleep"])
        if data.get("spin"):
            end = time.process_time() + data["spin"]
            while time.process_time() < end:
                pass
        if data.get("fail"):
            raise ValueError(data["fail"])
        if data.get("hog_mb"):
            hog = np.ones(data["hog_mb"] * 1024 * 1024 // 8)
            time.sleep(3)
        if context.custom_attributes:
            context.set_response_custom_attributes("echo=" + context.custom_attributes)
        return {"predictions": model.predict(np.array(data["rows"])).tolist(), "pid": os.getpid()}

    def output_fn(prediction, accept, context):
        return json.dumps(prediction), "application/json"
""")


@pytest.fixture(scope="session")
def scripted_archive(tmp_path_factory: pytest.TempPathFactory, model_archive: tuple[Path, Any]) -> Path:
    _, model = model_archive
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    path = tmp_path_factory.mktemp("scripted") / "model.tar.gz"
    path.write_bytes(tar_gz({"model.joblib": buffer.getvalue(), "code/inference.py": INFERENCE_PY.encode()}))
    return path
