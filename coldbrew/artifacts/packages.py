"""Packages a model's ``requirements.txt`` lists, installed once per distinct requirements.

SageMaker's serving containers ``pip install -r requirements.txt`` from the code directory when a
container starts (aws/sagemaker-inference-toolkit, ``model_server._install_requirements``; the
framework containers do the same for a ``source_dir``). coldbrew installs at CreateEndpoint
instead, so that no cold start waits for pip: into a directory keyed by the requirements' content
(and the pip options and interpreter), which every endpoint with the same requirements shares.

Layout under ``root``::

    <key>/                 a virtual environment; its site-packages goes on the worker's path
    <key>/coldbrew.json    what was installed, written last: a directory without it is unfinished
    tmp/                   environments being built, renamed to ``<key>`` when pip succeeds

The environment sees the server's own packages (a ``.pth`` file adds the server's site
directories), so pip installs only what is missing or pinned to another version than the server
has: the directory stays small, and a requirement already met costs nothing. pip never touches
the server's environment: packages outside the virtual environment are not uninstalled, they are
shadowed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from coldbrew.inherited_env import base_env

from .errors import ArtifactError
from .permissions import ContentGroups, reseal, seal, sealed
from .store import KeyedLocks

log = logging.getLogger("coldbrew.artifacts")

PIP_TIMEOUT_S = 900.0
"""Longest a pip install may run: a stalled index must fail the deploy, not hang it."""

_REASON_CHARS = 700
"""How much of pip's output a FailureReason carries (SageMaker caps FailureReason at 1,024)."""

_RECORD = "coldbrew.json"


@dataclass(frozen=True)
class Packages:
    """An installed requirements file."""

    site_packages: Path
    """Put on the worker's ``sys.path`` (before the server's own packages)."""
    shadowed: tuple[str, ...]
    """Distributions installed here in another version than the server's own environment holds.
    A worker forked from a zygote that has already imported one of them would run the server's
    version, so such a model's workers start as fresh interpreters."""


class PackageCache:
    """Installs requirements files into content-keyed directories under ``root``. Thread-safe;
    ``install`` blocks (for as long as pip runs), so call it from a worker thread."""

    def __init__(
        self,
        root: Path,
        pip_args: Sequence[str] = (),
        timeout_s: float = PIP_TIMEOUT_S,
        groups: ContentGroups | None = None,
        passthrough: Sequence[str] = (),
    ) -> None:
        """``groups`` and ``passthrough`` as for workers: each install's own group when workers
        run as users of their own, and the variables of the server's environment pip gets
        besides what the interpreter needs and pip's own (``PIP_*``, proxies)."""
        self.root, self.pip_args, self.timeout_s = Path(root), tuple(pip_args), timeout_s
        self.groups, self.passthrough = groups, tuple(passthrough)
        self._tmp = self.root / "tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self._locks = KeyedLocks()
        # Builds a crash left behind; one server owns a data dir, and none of its builds has begun.
        shutil.rmtree(self._tmp, ignore_errors=True)

    def install(self, requirements: Path, label: str) -> Packages:
        """Install ``requirements`` (named ``label`` in messages, e.g. ``code/requirements.txt``),
        or reuse an earlier install of the same content. Raises ArtifactError with pip's output."""
        try:
            content = requirements.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"Could not read {label}: {exc.strerror or exc}.") from exc
        key = self._key(content)
        final = self.root / key
        with self._locks.hold(key):
            if (final / _RECORD).is_file():
                return self._load(final)
            self._tmp.mkdir(parents=True, exist_ok=True)
            if final.exists():  # left by a crash between rename and record: build it again
                shutil.rmtree(final, ignore_errors=True)
            build = Path(tempfile.mkdtemp(dir=self._tmp, prefix="venv-"))
            try:
                self._build(build, requirements, label)
                seal(build, self.groups)
                os.rename(build, final)
            except BaseException:
                shutil.rmtree(build, ignore_errors=True)
                raise
            packages = Packages(_site_packages(final), _shadowed(_site_packages(final)))
            _write_record(final, packages, label)
            return packages

    def _key(self, content: bytes) -> str:
        identity = {
            "requirements": hashlib.sha256(content).hexdigest(),
            "pip_args": list(self.pip_args),
            # Wheels differ by interpreter; a server environment of its own gets its own installs.
            "python": sys.version,
            "prefix": sys.prefix,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def _build(self, venv: Path, requirements: Path, label: str) -> None:
        started = time.monotonic()
        # No pip of its own: the server's pip runs in it through the .pth below, which is faster
        # than installing one and keeps the operator's pip (and its configuration) in charge.
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", "--without-pip", str(venv)],
                check=True, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", None) or exc
            raise ArtifactError(f"Could not create an environment to install {label} into: {detail}") from exc
        target = _site_packages(venv)
        (target / "_coldbrew_server.pth").write_text(
            "".join(f"import site; site.addsitedir({d!r})\n" for d in _server_site_dirs())
        )
        python = venv / "bin" / "python"
        command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                   "--progress-bar", "off", "-r", str(requirements), *self.pip_args]  # fmt: skip
        log.info("installing %s: pip install -r %s %s", label, requirements.name, " ".join(self.pip_args))
        returncode, output = _run_pip(
            command, requirements.parent, label, self.timeout_s, pip_env(venv, self.passthrough)
        )
        if returncode is None:
            raise ArtifactError(
                f"Installing {label} did not finish within {self.timeout_s:.0f} s: {_tail(output)}"
            )
        if returncode != 0:
            log.warning("installing %s failed:\n%s", label, output)
            raise ArtifactError(
                f"Installing {label} failed (pip exited with status {returncode}): {_tail(output)}"
            )
        # The .pth stays: pip is done, and the worker puts only site-packages on its path, where
        # .pth files are not read.
        log.info("installed %s in %.1f s", label, time.monotonic() - started)

    def _load(self, final: Path) -> Packages:
        if not sealed(final, self.groups):
            reseal(final, self.groups)
        try:
            record = json.loads((final / _RECORD).read_text())
            shadowed = tuple(str(name) for name in record["shadowed"])
        except (OSError, ValueError, KeyError, TypeError):
            shadowed = _shadowed(_site_packages(final))
        return Packages(_site_packages(final), shadowed)


_PROGRESS = ("Collecting ", "Downloading ", "Installing collected packages", "Successfully installed")
"""pip's lines that tell how an install goes; the rest (its "Requirement already satisfied"
lines, warnings) stays out of the server log unless pip fails."""


_PIP_ENV_PREFIXES = ("PIP_",)
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
_PROXY_ENV = frozenset([*_PROXIES, *(name.lower() for name in _PROXIES)])


def pip_env(venv: Path, passthrough: Sequence[str] = ()) -> dict[str, str]:
    """pip's environment: what the interpreter needs, HOME (where the operator's pip.conf and
    pip's cache are), pip's own settings and proxies, and what the operator passes on; not the
    server's credentials, which a package's build script would otherwise see."""
    env = base_env(passthrough)
    env.update({k: v for k, v in os.environ.items() if k.startswith(_PIP_ENV_PREFIXES) or k in _PROXY_ENV})
    env.update(PIP_NO_INPUT="1", HOME=os.environ.get("HOME", str(venv)))
    return env


def _run_pip(
    command: list[str], cwd: Path, label: str, timeout_s: float, env: dict[str, str]
) -> tuple[int | None, str]:
    """Run pip, logging its progress lines as they come; its exit status (None if it ran out of
    time and was killed) and all it printed."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith(_PROGRESS):
                log.info("installing %s: %s", label, line.strip())

    reader = threading.Thread(target=read, name="pip-output", daemon=True)
    reader.start()
    try:
        returncode: int | None = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        returncode = None
    reader.join(timeout=5)
    return returncode, "".join(lines)


def _site_packages(venv: Path) -> Path:
    relative = Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)
    return venv / relative


def _server_site_dirs() -> list[str]:
    """The server's site directories: where its packages (and their .pth files) are."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dirs if os.path.isdir(d)]


def _shadowed(site_packages: Path) -> tuple[str, ...]:
    mine = {_normal(d.metadata["Name"]) for d in importlib.metadata.distributions(path=[str(site_packages)])}
    server = {_normal(d.metadata["Name"]) for d in importlib.metadata.distributions(path=_server_site_dirs())}
    return tuple(sorted(mine & server))


def _normal(name: str | None) -> str:
    return (name or "").lower().replace("_", "-").replace(".", "-")


def _write_record(final: Path, packages: Packages, label: str) -> None:
    record = {"source": label, "shadowed": list(packages.shadowed)}
    tmp = final / (_RECORD + ".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, final / _RECORD)


def _tail(output: str) -> str:
    """The end of pip's output, where its error is, on one line."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    # The index-location warnings of a locked-down pip.conf are noise next to the error.
    lines = [line for line in lines if not line.startswith("WARNING: Location")]
    text = " | ".join(lines)
    return text if len(text) <= _REASON_CHARS else "..." + text[-_REASON_CHARS:]
