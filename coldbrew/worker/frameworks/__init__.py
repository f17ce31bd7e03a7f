"""Framework defaults: the ``model_fn`` and ``predict_fn`` a model gets when it brings none.

Each framework is a module here exposing the :class:`Framework` protocol. Modules are listed by
import string and imported only when probed, and each imports its heavy library (joblib, xgboost,
torch, ...) inside ``model_fn``, so a worker pays only for the framework its model needs.
Adding a framework means one module and one line in ``_FRAMEWORKS``; the module's name is its
runtime name (:mod:`coldbrew.worker.runtimes`). Optional members: ``input_fn``, ``output_fn``,
``container_model_file`` (the file the framework's SageMaker container would load, used under
its image) and ``DEFAULT_ACCEPT`` (that container's answer type when a request names none).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, cast


class Framework(Protocol):
    NAME: str
    """Human name, used in messages."""

    EXPECTED: str
    """The files this framework loads, for the "no model file found" message."""

    def find_model_file(self, model_dir: Path) -> Path | None:
        """The model file this framework would load from ``model_dir``, or None if it sees none.

        Must be cheap (a directory listing, no imports of the framework); raise
        :class:`ModelLoadError` if the directory is ambiguous.
        """
        ...

    def model_fn(self, model_dir: str) -> Any: ...

    def predict_fn(self, data: Any, model: Any) -> Any: ...

    # A framework whose models take something other than a 2-D float array (tensors, DMatrix,
    # text/libsvm) may also define ``input_fn(input_data, content_type)`` and
    # ``output_fn(prediction, accept)``; without them the defaults of ``coldbrew.worker.codecs``
    # apply. One whose default functions run nothing of the user's may define
    # ``warm_up_body(model) -> bytes | None``: a CSV request the model answers, which a template's
    # spare sends itself before it serves (its first real predict is then a warm one). Optional
    # members cannot be spelled in a Protocol, so they are looked up by name.


# Probed in order; the first that finds a file wins.
_FRAMEWORKS: tuple[str, ...] = ("coldbrew.worker.frameworks.sklearn",)
_FRAMEWORKS += ("coldbrew.worker.frameworks.pytorch",)  # model.pt (TorchScript)
_FRAMEWORKS += (  # the file names of these three never overlap; JSON and text files are sniffed
    "coldbrew.worker.frameworks.xgboost",
    "coldbrew.worker.frameworks.lightgbm",
    "coldbrew.worker.frameworks.onnx",
)


def detect(model_dir: str) -> Framework | None:
    """The framework whose model file is in ``model_dir``, or None."""
    directory = Path(model_dir)
    for name in _FRAMEWORKS:
        framework = cast(Framework, importlib.import_module(name))
        if framework.find_model_file(directory) is not None:
            return framework
    return None


def expected_files() -> str:
    """What a model directory must hold for some framework to load it, for error messages."""
    return "; ".join(cast(Framework, importlib.import_module(name)).EXPECTED for name in _FRAMEWORKS)


def generic_predict_fn(data: Any, model: Any) -> Any:
    """``predict_fn`` for a model from a user's ``model_fn`` in a directory no framework claims."""
    return model.predict(data)


def runtime_of(framework: Framework) -> str:
    """The runtime name of a framework: its module's name (``...frameworks.xgboost`` -> ``xgboost``)."""
    return cast(Any, framework).__name__.rsplit(".", 1)[-1]


def for_runtime(runtime: str) -> Framework | None:
    """The registered framework of a runtime name, or None (``generic``, or not registered)."""
    for name in _FRAMEWORKS:
        if name.rsplit(".", 1)[-1] == runtime:
            return cast(Framework, importlib.import_module(name))
    return None
