"""Behaving as SageMaker's serving containers do: where the user's code is, and the environment.

SageMaker's framework containers find the entry point from ``SAGEMAKER_PROGRAM`` (a file name)
inside ``SAGEMAKER_SUBMIT_DIRECTORY``, which the SageMaker SDK sets to ``/opt/ml/model/code``
when it packs the code into the model archive, or to an ``s3://.../sourcedir.tar.gz`` otherwise.
Here ``/opt/ml/model`` means the model directory and a local directory (or ``file://`` URL) is used
as it is; an S3 source directory has been downloaded and extracted at deploy
(:mod:`coldbrew.serving.prepare`), which put its local path in the worker's environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from coldbrew.worker.errors import ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_PROGRAM = "inference.py"

# Where SageMaker mounts the model archive; paths under it name the model directory here.
SAGEMAKER_MODEL_DIR = "/opt/ml/model"

INSTALLED_REQUIREMENTS = "COLDBREW_REQUIREMENTS_INSTALLED"
"""Set in a worker's environment (to the packages' directory) when its requirements.txt was
installed at deploy."""

REQUIREMENTS_NOTE = (
    "code/requirements.txt lists packages, which were not installed for this worker: "
    "install them into coldbrew's Python environment"
)


@dataclass(frozen=True)
class EntryPoint:
    """The user's program: ``code_dir / program``, which may not exist."""

    code_dir: Path
    program: str
    """File name, with ``.py``."""
    named: bool
    """Named by ``SAGEMAKER_PROGRAM``, so it must exist."""

    @property
    def path(self) -> Path:
        return self.code_dir / self.program

    @property
    def label(self) -> str:
        """How messages name it: ``code/inference.py`` in the archive, else its full path."""
        return f"code/{self.program}" if self.code_dir.name == "code" else str(self.path)

    @property
    def requirements(self) -> Path | None:
        path = self.code_dir / "requirements.txt"
        return path if path.is_file() else None


def entry_point(model_dir: str, env: Mapping[str, str]) -> EntryPoint:
    program = env.get("SAGEMAKER_PROGRAM") or DEFAULT_PROGRAM
    if not program.endswith(".py"):
        program = f"{program}.py"
    submit = env.get("SAGEMAKER_SUBMIT_DIRECTORY", "").strip()
    code_dir = _submit_directory(submit, model_dir) if submit else Path(model_dir) / "code"
    return EntryPoint(code_dir, program, named=bool(env.get("SAGEMAKER_PROGRAM")))


def _submit_directory(submit: str, model_dir: str) -> Path:
    parsed = urlparse(submit)
    if parsed.scheme == "file":
        path = unquote(parsed.path)
    elif parsed.scheme:
        if parsed.scheme == "s3":
            # Downloaded at deploy, so a worker sees the URL only when started by hand.
            raise ModelLoadError(
                f"SAGEMAKER_SUBMIT_DIRECTORY is {submit}, which coldbrew downloads when the endpoint "
                "is created: this worker was started without it"
            )
        raise ModelLoadError(
            f"SAGEMAKER_SUBMIT_DIRECTORY is {submit}: use an s3:// URL of a .tar.gz, a local "
            "directory, or /opt/ml/model/code"
        )
    else:
        path = submit
    if path == SAGEMAKER_MODEL_DIR or path.startswith(SAGEMAKER_MODEL_DIR + "/"):
        path = model_dir + path[len(SAGEMAKER_MODEL_DIR) :]
    directory = Path(path)
    if not directory.is_dir():
        raise ModelLoadError(
            f"SAGEMAKER_SUBMIT_DIRECTORY is {submit}, but {directory} is not a directory: "
            "point it to the directory that holds the entry point, or put the code under code/ "
            "in the model archive"
        )
    return directory


def note_requirements(entry: EntryPoint, env: Mapping[str, str]) -> bool:
    """Log that a requirements.txt was not installed; True if there is one and it was not."""
    if entry.requirements is None or env.get(INSTALLED_REQUIREMENTS):
        return False
    logger.warning(
        "%s is not installed by coldbrew: the packages it lists must already be in the runtime",
        entry.requirements,
    )
    return True


def sagemaker_env(model_dir: str, entry: EntryPoint) -> dict[str, str]:
    """Variables SageMaker's serving containers set, for code written against them.

    ``SAGEMAKER_BIND_TO_PORT`` and the model-server variables are left out: the worker's address
    is coldbrew's business, and user code that reads them would only be misled.
    """
    return {
        "SM_MODEL_DIR": model_dir,
        "SM_MODULE_DIR": str(entry.code_dir),
        "SM_MODULE_NAME": entry.program[: -len(".py")],
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "SM_NUM_GPUS": "0",
    }
