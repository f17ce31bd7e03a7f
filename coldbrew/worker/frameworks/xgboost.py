"""XGBoost: a Booster in ``xgboost-model`` (as SageMaker's XGBoost container writes it), in a
``*.json``/``*.ubj``/``*.bst`` file, or a pickled Booster or scikit-learn wrapper (``XGBRegressor``,
``XGBClassifier``).

Input is what the XGBoost container reads: CSV (no header), libsvm, and, as the other
containers, JSON, JSON Lines and NPY. ``xgboost`` is imported only inside the functions.
"""

from __future__ import annotations

import logging
import pickle
import sys
from pathlib import Path
from typing import Any

from coldbrew.worker import libsvm
from coldbrew.worker.errors import BadRequest, ModelLoadError, UnsupportedMediaType, one_line
from coldbrew.worker.frameworks.files import single_model_file
from coldbrew.worker.frameworks.requires import require
from coldbrew.worker.media import CSV, JSON, JSONLINES, LIBSVM, NPY, canonical

NAME = "XGBoost"

# The name SageMaker's XGBoost algorithm and container write the model under.
MODEL_FILE = "xgboost-model"
SUFFIXES = (".json", ".ubj", ".bst")

EXPECTED = "xgboost-model (an XGBoost Booster) or an XGBoost *.json/*.ubj/*.bst model"

# What the SageMaker XGBoost container answers when the request names no Accept.
DEFAULT_ACCEPT = CSV

_PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")

logger = logging.getLogger(__name__)


def find_model_file(model_dir: Path) -> Path | None:
    # A *.json file may be anyone's (a tokenizer, a config): only XGBoost's own are claimed.
    return single_model_file(
        model_dir,
        kind="XGBoost models",
        names=(MODEL_FILE,),
        suffixes=SUFFIXES,
        accept=lambda p: p.suffix == ".bst" or _is_xgboost_document(p),
    )


def container_model_file(model_dir: Path) -> Path | None:
    """The file SageMaker's XGBoost container would load: ours, else a pickle, else the only file.

    The container loads the first regular file of the model directory whatever its name, so a
    model deployed there with an unusual file name must load here too.
    """
    found = find_model_file(model_dir)
    if found is not None:
        return found
    try:
        files = sorted(p for p in model_dir.iterdir() if p.is_file())
    except OSError:
        return None
    pickles = [p for p in files if p.suffix in _PICKLE_SUFFIXES]
    if len(pickles) == 1:
        return pickles[0]
    return files[0] if len(files) == 1 else None


def _is_xgboost_document(path: Path) -> bool:
    # JSON: {"learner": ...}; UBJSON: {L<int64 length>learner. Both name the learner first.
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return head.startswith(b"{") and b"learner" in head


def model_fn(model_dir: str) -> Any:
    path = container_model_file(Path(model_dir))
    if path is None:
        raise ModelLoadError(f"No XGBoost model in {model_dir}: expected {EXPECTED}")
    xgb = require("xgboost", framework=NAME, model_dir=model_dir, extra="xgboost")
    if _is_pickle(path):
        # SageMaker's XGBoost 0.90-1.2 containers pickled the Booster into xgboost-model; users
        # pickle the scikit-learn wrappers with joblib. Both load as the container loads them.
        return _unpickle(path)
    booster = xgb.Booster()
    try:
        # From memory: XGBoost then tells JSON, UBJSON and its legacy binary format apart by their
        # content; from a path it guesses by the extension, and warns about "xgboost-model".
        booster.load_model(bytearray(path.read_bytes()))
    except Exception as exc:
        raise ModelLoadError(
            f"could not load {path} as an XGBoost model with xgboost {xgb.__version__}: {one_line(exc)} "
            "(a model saved in XGBoost's legacy binary format loads only with the XGBoost versions that "
            "read it: save it again with Booster.save_model('xgboost-model.json'), or define model_fn)"
        ) from exc
    return booster


def _is_pickle(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(1) == b"\x80"  # the PROTO opcode of every pickle of protocol 2+ (joblib's too)


def _unpickle(path: Path) -> Any:
    try:
        import joblib

        return joblib.load(path)
    except Exception as exc:
        try:
            with path.open("rb") as f:
                return pickle.load(f)
        except Exception:
            logger.debug("pickle fallback failed for %s", path, exc_info=True)
        raise ModelLoadError(f"could not unpickle {path}: {one_line(exc)}") from exc


# --- requests -----------------------------------------------------------------------------------


def input_fn(input_data: str | bytes, content_type: str) -> Any:
    """CSV, JSON, JSON Lines and NPY as a dense array (the default codecs); libsvm as sparse rows."""
    from coldbrew.worker import codecs  # numpy: not for a worker that only probes this module

    if canonical(content_type) == LIBSVM:
        if not input_data:
            raise BadRequest("the request body is empty")
        return libsvm.decode(input_data)
    try:
        return codecs.decode(input_data, content_type)
    except UnsupportedMediaType:
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not supported by the XGBoost input_fn: send "
            f"{CSV}, {LIBSVM}, {JSON}, {JSONLINES} or {NPY}, or define input_fn in code/inference.py"
        ) from None


def predict_fn(data: Any, model: Any) -> Any:
    # Looked up, not imported: a model that is a Booster has imported xgboost already.
    xgb = sys.modules.get("xgboost")
    if xgb is not None and isinstance(model, xgb.Booster):
        expected = model.num_features()
        data = _fit_width(data, expected)
        # validate_features=False as the container does: a model trained on a named DataFrame
        # still serves rows that carry no names.
        return model.predict(xgb.DMatrix(data), validate_features=False)
    expected = getattr(model, "n_features_in_", None)
    if isinstance(expected, int):
        data = _fit_width(data, expected)
    return model.predict(data)


def _fit_width(data: Any, expected: int) -> Any:
    """Check the feature count (XGBoost's own error would be a 500); widen sparse rows.

    A libsvm row need not name its last columns (they are missing), so a sparse matrix narrower
    than the model is widened, never refused.
    """
    shape = getattr(data, "shape", None)
    if shape is None or len(shape) != 2 or expected <= 0:
        return data
    if hasattr(data, "tocsr"):  # scipy.sparse
        if shape[1] > expected:
            raise BadRequest(
                f"libsvm rows name feature index {shape[1] - 1}, but the model has {expected} features"
            )
        if shape[1] < expected:
            data = data.tocsr().copy()
            data.resize((shape[0], expected))
        return data
    if shape[1] != expected:
        raise BadRequest(f"each row must have {expected} features, got {shape[1]}")
    return data
