"""scikit-learn (and anything else saved with joblib or pickle that has ``predict``)."""

from __future__ import annotations

import logging
import pickle
import warnings
from pathlib import Path
from typing import Any

from coldbrew.worker.errors import BadRequest, ModelLoadError, one_line
from coldbrew.worker.frameworks.files import single_model_file

NAME = "scikit-learn"

# Looked for in this order; any one file with a suffix below is used when none of these exist.
MODEL_FILES = ("model.joblib", "model.pkl", "model.pickle")
SUFFIXES = (".joblib", ".pkl", ".pickle")

EXPECTED = "model.joblib, model.pkl or model.pickle (or a single *.joblib/*.pkl/*.pickle file)"

logger = logging.getLogger(__name__)


def find_model_file(model_dir: Path) -> Path | None:
    return single_model_file(model_dir, kind="model files", names=MODEL_FILES, suffixes=SUFFIXES)


def model_fn(model_dir: str) -> Any:
    path = find_model_file(Path(model_dir))
    if path is None:
        raise ModelLoadError(f"No scikit-learn model in {model_dir}: expected {EXPECTED}")
    try:
        import joblib
    except ImportError:  # joblib is optional for plain pickles
        joblib = None
    try:
        if joblib is not None:
            return _joblib_load(joblib, path)
        with path.open("rb") as f:
            return pickle.load(f)
    except Exception as exc:
        error = exc
    if joblib is not None:
        # joblib reads plain pickles too, but not every one (protocol quirks); give pickle a turn.
        try:
            with path.open("rb") as f:
                return pickle.load(f)
        except Exception:
            logger.debug("pickle fallback failed for %s", path, exc_info=True)
    raise ModelLoadError(f"could not load {path}: {one_line(error)}") from error


# Above this size, numpy arrays inside a joblib file are memory-mapped from the artifact cache
# instead of copied: a cold start then reads pages already in the page cache, and workers of the
# same model share them. Measured on this project's 2-core machine, from a warm page cache: a
# 174 MB random forest loads in 150 ms instead of 440 ms, a 48 MB array in 2 ms instead of 26 ms;
# a 3 MB forest loads slightly slower mapped (12 ms against 10 ms), hence the threshold.
MMAP_MIN_BYTES = 16 * 1024 * 1024


def _joblib_load(joblib: Any, path: Path) -> Any:
    if path.stat().st_size < MMAP_MIN_BYTES:
        return joblib.load(path)
    with warnings.catch_warnings():
        # A compressed joblib file cannot be mapped; joblib says so and loads it normally.
        warnings.simplefilter("ignore", UserWarning)
        return joblib.load(path, mmap_mode="r")


def predict_fn(data: Any, model: Any) -> Any:
    # Checked here because scikit-learn reports it as a ValueError, which would be a 500.
    expected = getattr(model, "n_features_in_", None)
    shape = getattr(data, "shape", None)
    if isinstance(expected, int) and shape is not None and len(shape) == 2 and shape[1] != expected:
        raise BadRequest(f"each row must have {expected} features, got {shape[1]}")
    return model.predict(data)


def warm_up_body(model: Any) -> bytes | None:
    """A CSV row of zeros the model takes, for a throwaway request (a template's spare runs one
    while it waits: :mod:`coldbrew.worker.template`); None unless every estimator and function in
    the model is scikit-learn's, numpy's or scipy's, whose predict has no side effects (a pickled
    class of the user's, or a FunctionTransformer's function, is user code, which must not run
    unasked)."""
    features = getattr(model, "n_features_in_", None)
    if not isinstance(features, int) or features < 1 or not _library_only(model):
        return None
    return ",".join(["0"] * features).encode()


_LIBRARIES = ("sklearn", "numpy", "scipy")
_PLAIN = (str, bytes, int, float, bool, list, tuple, dict, type(None))


def _library_only(model: Any) -> bool:
    if not _of_library(type(model)):
        return False
    try:
        params = model.get_params(deep=True)
    except Exception:  # not an estimator, or one whose get_params is its own
        return False
    for value in params.values():
        if isinstance(value, _PLAIN):
            continue  # a container's estimators are among the deep parameters themselves
        # A class or function stands for itself; an object (an estimator) for its class.
        function = isinstance(value, type) or callable(value) and not hasattr(value, "get_params")
        owner = value if function else type(value)
        if not _of_library(owner):
            return False
    return True


def _of_library(owner: Any) -> bool:
    module = getattr(owner, "__module__", None) or ""
    return module.split(".", 1)[0] in _LIBRARIES
