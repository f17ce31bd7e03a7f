"""Runtime selection (image URI, then model files, then the entry point's imports) and the
zygote preload lists: no ML library imported to decide, and no thread started by a preload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coldbrew.worker.runtimes import RUNTIME_PRELOAD, RUNTIMES, detect_runtime, image_runtime
from coldbrew.worker.zygote import THREAD_ENV
from tests.runtime.helpers import PYTORCH_IMAGE, SKLEARN_IMAGE, XGBOOST_IMAGE


@pytest.mark.parametrize(
    ("image", "runtime"),
    [
        (XGBOOST_IMAGE, "xgboost"),
        ("246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-xgboost:1.5-1", "xgboost"),
        (SKLEARN_IMAGE, "sklearn"),
        ("720646828776.dkr.ecr.ap-south-1.amazonaws.com/sagemaker-scikit-learn:0.23-1-cpu-py3", "sklearn"),
        (PYTORCH_IMAGE, "pytorch"),
        ("727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/pytorch-inference:1.13-gpu-py39", "pytorch"),
        ("763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference@sha256:" + "0" * 64, "pytorch"),
        ("520713654638.dkr.ecr.us-east-1.amazonaws.com/sagemaker-pytorch:1.1.0-cpu-py3", "pytorch"),
        ("763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.13-cpu", None),
        ("coldbrew/sklearn", None),
        ("exec:python serve.py", None),
        ("", None),
        (None, None),
    ],
)
def test_image_runtime(image: str | None, runtime: str | None) -> None:
    assert image_runtime(image) == runtime


def test_image_wins_over_files(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"\x80")
    assert detect_runtime(str(tmp_path), XGBOOST_IMAGE, {}) == "xgboost"
    assert detect_runtime(str(tmp_path), "coldbrew/xgboost", {}) == "sklearn"
    assert detect_runtime(str(tmp_path), XGBOOST_IMAGE, {"COLDBREW_RUNTIME": "onnx"}) == "onnx"


@pytest.mark.parametrize(
    ("files", "runtime"),
    [
        ({"model.joblib": b"\x80"}, "sklearn"),
        ({"xgboost-model": b"anything"}, "xgboost"),
        ({"model.json": b'{"learner":{"attributes":{}}, "version":[2,1,0]}'}, "xgboost"),
        ({"model.ubj": b"{L\x00\x00\x00\x00\x00\x00\x00\x07learner{"}, "xgboost"),
        ({"model.txt": b"tree\nversion=v4\nnum_class=1\n"}, "lightgbm"),
        ({"model.onnx": b"\x08\x07"}, "onnx"),
        ({"model.pt": b"PK"}, "pytorch"),
        # Neither a config.json nor a README.txt is a model.
        ({"config.json": b'{"hidden_size": 8}', "README.txt": b"hello"}, "generic"),
        ({"code/inference.py": b"import torch\nimport numpy as np\n"}, "pytorch"),
        ({"code/inference.py": b"from xgboost import Booster\n"}, "xgboost"),
        ({"code/inference.py": b"import json\n"}, "generic"),
        ({}, "generic"),
    ],
)
def test_runtime_from_files(tmp_path: Path, files: dict[str, bytes], runtime: str) -> None:
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    assert detect_runtime(str(tmp_path), None, {}) == runtime


def test_ambiguous_directory_is_left_to_the_load(tmp_path: Path) -> None:
    (tmp_path / "a.onnx").write_bytes(b"")
    (tmp_path / "b.onnx").write_bytes(b"")
    assert detect_runtime(str(tmp_path), None, {}) == "generic"
    assert detect_runtime(str(tmp_path / "missing"), None, {}) == "generic"


def test_detection_imports_no_ml_library(tmp_path: Path) -> None:
    (tmp_path / "xgboost-model").write_bytes(b"x")
    code = (
        "import sys, json\n"
        "from coldbrew.worker.runtimes import detect_runtime\n"
        f"print(detect_runtime({str(tmp_path)!r}, None, {{}}))\n"
        "heavy = ('numpy', 'xgboost', 'lightgbm', 'onnxruntime', 'torch', 'sklearn')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "xgboost" and json.loads(out[1]) == []


PROBE = """
import importlib, json, os, sys
loaded = []
for name in sys.argv[1:]:
    try:
        module, _, warm_up = name.partition(":")
        imported = importlib.import_module(module)
        if warm_up:
            getattr(imported, warm_up)()
        loaded.append(name)
    except ImportError:
        pass
print(json.dumps({"loaded": loaded, "threads": len(os.listdir("/proc/self/task"))}))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc")
@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_preloads_start_no_thread(runtime: str) -> None:
    # A zygote forks only its own thread: a preload that starts others would make it unsafe.
    env = {name: "1" for name in THREAD_ENV}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *RUNTIME_PRELOAD[runtime]],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    report = json.loads(result.stdout)
    assert report["threads"] == 1, report
