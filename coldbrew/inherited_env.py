"""What of the gateway's environment the processes it starts inherit (workers, zygotes, pip runs):
a module of its own because both the backends and the artifact caches start such processes."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from coldbrew.worker.zygote import THREAD_ENV

INTERPRETER_ENV = frozenset(
    {
        "PATH", "LANG", "LANGUAGE", "TZ", "TERM",
        "PYTHONPATH", "PYTHONHOME", "PYTHONNOUSERSITE", "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED", "PYTHONIOENCODING", "PYTHONUTF8",
        "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "LD_LIBRARY_PATH",
        "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "SSL_CERT_FILE", "SSL_CERT_DIR",
        *THREAD_ENV,
    }
)  # fmt: skip
"""Variables of the gateway's environment every worker gets: what finds and runs the interpreter
and its libraries, and the locale (``LC_*`` too). Never credentials."""


def base_env(passthrough: Iterable[str] = (), environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The part of the gateway's environment every process the backend starts gets."""
    allowed = INTERPRETER_ENV | set(passthrough)
    return {k: v for k, v in environ.items() if k in allowed or k.startswith("LC_")}
