"""The virtual environments the SDK tests run client code in, one per SageMaker SDK major.

2.x and 3.x are both the ``sagemaker`` distribution, so they cannot share an environment, and
neither goes into the test environment itself: the server under test must not import a client
SDK. Built by the test command before pytest (the only step that may reach a package index);
rebuilt when a requirements file changes.

``real`` is not a client's: it is the test environment's packages (system site packages) plus what
a SageMaker user adds next to coldbrew (the SDK, pandas, pyarrow), for the server of
``tests/backends/test_zygotes_real_env.py`` (issue 18: zygotes in such an environment).

    python -m tests.sdk.environments      # build what is missing or out of date
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent / ".sdk-envs"
MAJORS = ("v2", "v3")
SERVER_ENVS = ("real",)
"""Environments a coldbrew server runs in, over the test environment's own packages."""


def requirements(major: str) -> Path:
    return HERE / f"requirements-{major}.txt"


def python_for(major: str) -> Path:
    """The interpreter of a built, up-to-date environment; raises RuntimeError otherwise."""
    python = ROOT / major / "bin" / "python"
    if not (python.exists() and _current(major)):
        raise RuntimeError(
            f"the SageMaker SDK {major} test environment is missing or out of date: "
            "run `python -m tests.sdk.environments` (the README's test command does)"
        )
    return python


def _stamp(major: str) -> Path:
    return ROOT / major / "coldbrew-requirements.sha256"


def _current(major: str) -> bool:
    return _stamp(major).exists() and _stamp(major).read_text() == _digest(major)


def _digest(major: str) -> str:
    return hashlib.sha256(requirements(major).read_bytes()).hexdigest()


def build(major: str) -> None:
    venv = ROOT / major
    if _current(major):
        return
    shutil.rmtree(venv, ignore_errors=True)
    print(f"building {venv} from {requirements(major).name}", flush=True)
    over = ["--system-site-packages"] if major in SERVER_ENVS else []
    subprocess.run([sys.executable, "-m", "venv", *over, str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(requirements(major))],
        check=True,
    )
    _stamp(major).write_text(_digest(major))


if __name__ == "__main__":
    for name in (*MAJORS, *SERVER_ENVS):
        build(name)
