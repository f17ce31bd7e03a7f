"""Importing a framework's library inside ``model_fn``, with a message that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from coldbrew.worker.errors import ModelLoadError, one_line


def require(module: str, *, framework: str, model_dir: str, extra: str) -> ModuleType:
    """``import module``, or a :class:`ModelLoadError` saying which ``coldbrew[extra]`` provides it.

    The message becomes the endpoint's FailureReason, so it says what to run, not only what broke.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        install = f'pip install "coldbrew[{extra}]"'
        top = module.split(".", 1)[0]
        if isinstance(exc, ModuleNotFoundError) and exc.name in (module, top):
            message = f"{framework} model found in {model_dir}, but {top} is not installed: {install}"
        else:
            # Installed but broken (a missing shared library, a version clash): say what failed.
            message = (
                f"{framework} model found in {model_dir}, but importing {top} failed "
                f"({one_line(exc)}): {install}, or repair its installation"
            )
        raise ModelLoadError(message) from exc
