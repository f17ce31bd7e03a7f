"""Which runtime serves a model, and what a pre-importing zygote should load for each.

A runtime is a name for a set of heavy imports and default handlers: one of :data:`RUNTIMES`.
It is chosen, cheaply and without importing any ML library, by

1. ``COLDBREW_RUNTIME`` in the model's environment, when a user wants to say it outright;
2. the image, when it is one of SageMaker's framework containers (the model then behaves as in
   that container, see :mod:`coldbrew.worker.container`);
3. the files in the model directory (the framework whose model file is there);
4. the imports of the entry point ``code/inference.py``, for models loaded by their own model_fn;
5. else ``generic``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from coldbrew.worker import container, frameworks
from coldbrew.worker.errors import ModelLoadError

RUNTIMES = ("sklearn", "xgboost", "lightgbm", "onnx", "pytorch", "generic")

# Repository names of SageMaker's framework containers (the part after the registry host and
# before the tag), in every region and account, and the runtime each one is.
_IMAGE_REPOSITORIES = {
    "sagemaker-scikit-learn": "sklearn",
    "sagemaker-xgboost": "xgboost",
    "pytorch-inference": "pytorch",
    "sagemaker-pytorch": "pytorch",  # PyTorch containers before 1.2 (sagemaker-pytorch-serving)
}

# Modules a zygote for each runtime imports before it forks workers (``module:function``: import,
# then call it, a warm-up whose work every forked worker then inherits done). Only libraries that start
# no thread at import belong here (a fork copies only the forking thread): onnxruntime starts
# native threads when imported, so the ONNX zygote pre-imports numpy and coldbrew's code only;
# torch is the other engineer's call and is listed as the pytorch runtime needs it. A name that
# does not import (an extra not installed) is skipped by the zygote.
RUNTIME_PRELOAD: dict[str, tuple[str, ...]] = {
    "sklearn": (
        "numpy",
        "scipy.sparse",
        "joblib",
        "sklearn.ensemble",
        "sklearn.linear_model",
        "sklearn.tree",
        "sklearn.pipeline",
        "sklearn.preprocessing",
        "coldbrew.worker.frameworks.sklearn",
        "coldbrew.worker.runtimes:warm_sklearn",
    ),
    "xgboost": (
        "numpy",
        "scipy.sparse",
        "joblib",
        "xgboost",
        "coldbrew.worker.frameworks.xgboost",
        "coldbrew.worker.libsvm",
    ),
    "lightgbm": ("numpy", "scipy.sparse", "lightgbm", "coldbrew.worker.frameworks.lightgbm"),
    "onnx": ("numpy", "coldbrew.worker.frameworks.onnx"),
    # transformers and sentence-transformers take seconds to import and start no thread: for an
    # embedding model they are most of the cold start, so its zygote imports them (if installed).
    "pytorch": (
        "numpy",
        "torch",
        "coldbrew.worker.frameworks.pytorch",
        "transformers",
        "sentence_transformers",
    ),
    # A model loaded by its own model_fn with no known model file: numpy and joblib are what
    # nearly all of them import; anything heavier is paid by the model that needs it.
    "generic": ("numpy", "joblib"),
}


def warm_sklearn() -> None:
    """A throwaway fit and predict in the scikit-learn zygote, so that what scikit-learn does once
    per process on a first predict is done before the fork: its input check asks narwhals for
    dataframe plugins, which reads the entry points of every installed distribution (5 ms in the
    test environment, 15-45 ms per cold start with the SageMaker SDK's 230 installed). Sequential,
    seeded: no thread, no draw from numpy's global random state."""
    import numpy as np
    from sklearn.ensemble import RandomForestRegressor

    x = np.linspace(0.0, 1.0, 8).reshape(4, 2)
    RandomForestRegressor(n_estimators=2, random_state=0).fit(x, x[:, 0]).predict(x[:1])


# `import torch` / `from xgboost import ...` at the start of a line of the entry point.
_IMPORT = re.compile(
    r"^\s*(?:import|from)\s+(sklearn|xgboost|lightgbm|onnxruntime|torch|transformers|sentence_transformers)\b",
    re.MULTILINE,
)
_MODULE_RUNTIMES = {
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "onnxruntime": "onnx",
    "torch": "pytorch",
    "transformers": "pytorch",
    "sentence_transformers": "pytorch",
}


def image_runtime(image: str | None) -> str | None:
    """The runtime of a SageMaker framework container image URI, or None for any other image.

    ``683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1`` -> ``xgboost``; the
    registry (any region, account or mirror) and the tag or digest do not matter.
    """
    if not image or image.startswith("exec:"):
        return None
    path = image.split("@", 1)[0]
    last = path.rsplit("/", 1)[-1]
    repository = last.split(":", 1)[0].lower()
    return _IMAGE_REPOSITORIES.get(repository)


def detect_runtime(model_dir: str, image: str | None, env: Mapping[str, str]) -> str:
    """The runtime for a model: see the module docstring for the order of evidence.

    Never raises and imports no ML library: the caller picks a zygote with it before any model
    code runs, and a model directory the frameworks find ambiguous is reported by the load.
    """
    forced = env.get("COLDBREW_RUNTIME", "").strip().lower()
    if forced in RUNTIMES:
        return forced
    by_image = image_runtime(image)
    if by_image is not None:
        return by_image
    directory = Path(model_dir)
    try:
        framework = frameworks.detect(model_dir)
    except (ModelLoadError, OSError):
        framework = None
    if framework is not None:
        return frameworks.runtime_of(framework)
    return _runtime_from_code(directory, env) or "generic"


def _runtime_from_code(model_dir: Path, env: Mapping[str, str]) -> str | None:
    try:
        source = container.entry_point(str(model_dir), env).path.read_text(errors="replace")
    except (ModelLoadError, OSError):
        return None
    found = {_MODULE_RUNTIMES[m] for m in _IMPORT.findall(source)}
    # torch and the boosting libraries are the heavy ones: prefer them over scikit-learn, which
    # such code often imports for a preprocessing helper.
    for runtime in ("pytorch", "xgboost", "lightgbm", "onnx", "sklearn"):
        if runtime in found:
            return runtime
    return None
