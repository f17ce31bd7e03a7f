"""LightGBM: a text model file written by ``Booster.save_model`` (``model.txt``, or any ``*.txt``
that is one). ``lightgbm`` is imported only inside ``model_fn``.

A LightGBM scikit-learn wrapper pickled with joblib is a scikit-learn model here (``model.joblib``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from coldbrew.worker.errors import BadRequest, ModelLoadError, one_line
from coldbrew.worker.frameworks.files import single_model_file
from coldbrew.worker.frameworks.requires import require

NAME = "LightGBM"

MODEL_FILE = "model.txt"
SUFFIXES = (".txt",)

EXPECTED = "model.txt (a LightGBM text model, or any *.txt saved by Booster.save_model)"


def find_model_file(model_dir: Path) -> Path | None:
    # A README.txt or requirements.txt is not a model: only files that begin as LightGBM's do count.
    return single_model_file(
        model_dir,
        kind="LightGBM models",
        names=(MODEL_FILE,),
        suffixes=SUFFIXES,
        accept=_is_lightgbm_text,
        check_names=True,
    )


def _is_lightgbm_text(path: Path) -> bool:
    # save_model writes "tree" on the first line and "version=v<N>" on the second.
    try:
        with path.open("rb") as f:
            head = f.read(32)
    except OSError:
        return False
    return head.startswith(b"tree\n") and b"version=" in head


def model_fn(model_dir: str) -> Any:
    path = find_model_file(Path(model_dir))
    if path is None:
        raise ModelLoadError(f"No LightGBM model in {model_dir}: expected {EXPECTED}")
    lgb = require("lightgbm", framework=NAME, model_dir=model_dir, extra="lightgbm")
    try:
        return lgb.Booster(model_file=str(path))
    except Exception as exc:
        raise ModelLoadError(f"could not load {path} as a LightGBM model: {one_line(exc)}") from exc


def predict_fn(data: Any, model: Any) -> Any:
    lgb = sys.modules.get("lightgbm")
    if lgb is not None and isinstance(model, lgb.Booster):
        expected = model.num_feature()
    else:  # a user's model_fn returned something else, such as a scikit-learn wrapper
        expected = getattr(model, "n_features_in_", None)
    shape = getattr(data, "shape", None)
    # LightGBM reports a wrong width as an exception that would be a 500; it is the client's error.
    if isinstance(expected, int) and shape is not None and len(shape) == 2 and shape[1] != expected:
        raise BadRequest(f"each row must have {expected} features, got {shape[1]}")
    return model.predict(data)
