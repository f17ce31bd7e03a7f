"""Everything a variant's workers need on disk before the first one starts, done at deploy.

What SageMaker's serving containers do when one starts, coldbrew does once per deploy, so that
no cold start pays for it:

- the model data, fetched and extracted into the artifact cache (SageMaker's ``/opt/ml/model``);
- a source directory the SDK uploaded (``SAGEMAKER_SUBMIT_DIRECTORY=s3://.../sourcedir.tar.gz``,
  which SageMaker's framework containers download and extract at start), through the same cache
  and its safety rules;
- ``requirements.txt`` in the code directory, pip-installed into a directory shared by every
  model with the same requirements (:mod:`coldbrew.artifacts.packages`);
- the runtime (which zygote forks its workers), read off the files.

Runs on a reconciler thread: all of it is blocking I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from coldbrew.artifacts import ArtifactError, ArtifactStore
from coldbrew.artifacts.packages import PackageCache
from coldbrew.serving.errors import DeployError
from coldbrew.serving.targets import VariantTarget
from coldbrew.worker import container
from coldbrew.worker.errors import ModelLoadError
from coldbrew.worker.runtimes import detect_runtime

SUBMIT_DIRECTORY = "SAGEMAKER_SUBMIT_DIRECTORY"


@dataclass(frozen=True)
class PreparedVariant:
    model_dir: str
    runtime: str
    env: dict[str, str] = field(default_factory=dict)
    """The model's Environment as its workers get it: a downloaded source directory's local
    path in SAGEMAKER_SUBMIT_DIRECTORY, the requirements' packages first on PYTHONPATH."""
    labels: dict[str, str] = field(default_factory=dict)
    """Cache directory -> the user's name for it, for error messages."""
    fresh: bool = False
    """Workers must start as fresh interpreters (see :attr:`Packages.shadowed`)."""


def prepare_variant(
    variant: VariantTarget, artifacts: ArtifactStore, packages: PackageCache
) -> PreparedVariant:
    """Raises DeployError with a FailureReason that names the user's URLs, never cache paths."""
    container_def = variant.container
    env = dict(container_def.environment)
    try:
        model_dir = str(artifacts.materialize(container_def.model_data))
    except ArtifactError as exc:
        raise DeployError(str(exc)) from None
    labels = {model_dir: _model_source(variant)}

    submit = env.get(SUBMIT_DIRECTORY, "").strip()
    if submit.startswith(("s3://", "file://")) or _outside_model_dir(submit):
        # A local source directory is copied into the cache too: read under the model roots, and
        # where a worker of its own user can be given it.
        try:
            code_dir = str(artifacts.materialize({"ModelDataUrl": submit}))
        except ArtifactError as exc:
            raise DeployError(f"{_as_source_directory(str(exc))} ({SUBMIT_DIRECTORY})") from None
        env[SUBMIT_DIRECTORY] = code_dir
        labels[code_dir] = submit

    fresh = False
    try:
        entry = container.entry_point(model_dir, env)
    except ModelLoadError:
        entry = None  # a bad SAGEMAKER_SUBMIT_DIRECTORY: the worker's load reports it
    if entry is not None and entry.requirements is not None:
        label = _label(str(entry.requirements), labels)
        try:
            installed = packages.install(entry.requirements, label)
        except ArtifactError as exc:
            raise DeployError(str(exc)) from None
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join([str(installed.site_packages), *([path] if path else [])])
        env[container.INSTALLED_REQUIREMENTS] = str(installed.site_packages)
        fresh = bool(installed.shadowed)

    runtime = detect_runtime(model_dir, container_def.image, env)
    return PreparedVariant(model_dir, runtime, env, labels, fresh)


def _outside_model_dir(submit: str) -> bool:
    """A local directory of the server's (``/opt/ml/model/...`` names the model directory)."""
    return submit.startswith("/") and not (
        submit == container.SAGEMAKER_MODEL_DIR or submit.startswith(container.SAGEMAKER_MODEL_DIR + "/")
    )


def _as_source_directory(message: str) -> str:
    """An artifact error worded for the source directory: the cache words them for model data,
    and "Could not find model data at .../sourcedir.tar.gz" would send the user to the wrong file."""
    return message.replace("Model data", "The source directory").replace("model data", "the source directory")


def _model_source(variant: VariantTarget) -> str:
    """The user's name for the model data: its ModelDataUrl or S3 prefix (or the model's name)."""
    data = variant.container.model_data
    url = data.get("ModelDataUrl")
    if url:
        return str(url)
    s3 = (data.get("ModelDataSource") or {}).get("S3DataSource") or {}
    return str(s3.get("S3Uri") or f"model {variant.model_name}")


def _label(path: str, labels: dict[str, str]) -> str:
    """``path`` as the user knows it: ``code/requirements.txt in s3://.../model.tar.gz``."""
    for directory, label in labels.items():
        if path.startswith(directory + os.sep):
            return f"{path[len(directory) + 1 :]} in {label}"
    return path
