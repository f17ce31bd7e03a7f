"""What model code may see and who it runs as: the gateway's side of containing workers.

- **Environment.** Every process the backend starts (zygotes, workers, users' servers) gets an
  environment built from an allow-list, never a copy of the gateway's: what the interpreter needs
  (:data:`coldbrew.inherited_env.INTERPRETER_ENV`), what the operator names in
  ``COLDBREW_WORKER_ENV_PASSTHROUGH``, then the model's Environment and the variables SageMaker's
  containers set. The gateway's AWS credentials, ``COLDBREW_*`` settings and anything else it was
  started with stay with it.
- **User.** When the gateway runs as root, each tenant (an endpoint, or a batch transform job)
  runs as a user of its own from ``COLDBREW_WORKER_IDS``, with a private directory for its
  sockets and its ``HOME``. Cache entries (model, code, packages) belong to a group of their own
  (:mod:`coldbrew.artifacts.permissions`), which only the workers that serve them join.
- **Files.** The data dir is private (0700). A worker of its own user sees its cache entries on
  fixed mountpoints in the run directory (``<run>/model``, ``<run>/source``, ``<run>/packages``), in
  a mount namespace of its own; directories it must cross but may not (an interpreter under
  ``/root``) are covered by an empty tmpfs with only what it needs bound back.
- **Network.** ``EnableNetworkIsolation`` gives a worker a network namespace with no interface;
  the gateway still reaches it on its Unix socket, which is a file, not a network address. A
  user's own server always gets one (with only ``lo`` up), reached through a relay's Unix socket
  (:mod:`coldbrew.backends.user_server`).
"""

from __future__ import annotations

import itertools
import os
import re
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import coldbrew
from coldbrew.backends.base import WorkerSpec
from coldbrew.inherited_env import base_env
from coldbrew.worker.container import INSTALLED_REQUIREMENTS
from coldbrew.worker.messages import Bind, Sandbox

SUBMIT_DIRECTORY = "SAGEMAKER_SUBMIT_DIRECTORY"

MOUNTPOINTS = ("model", "source", "packages")
"""Where a worker of its own user sees its model data, source directory and installed
requirements (under the run directory)."""

DEFAULT_IDS = "1900000000-1901999999"
"""Ids for workers of their own user, outside every range Linux distributions, systemd and
container runtimes hand out (systemd's "unused" range above its container uids)."""

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


@dataclass(frozen=True)
class IdRange:
    """Numeric ids for workers: the first half are tenants' users (each with the group of the same
    number), the second half the groups of cache entries. Neither needs an /etc/passwd entry."""

    first: int
    last: int

    @property
    def users(self) -> range:
        return range(self.first, self.first + (self.last - self.first + 1) // 2)

    @property
    def groups(self) -> range:
        return range(self.users.stop, self.last + 1)


def parse_ids(value: str) -> IdRange | None:
    """``COLDBREW_WORKER_IDS``: ``auto`` (the default range), ``off`` (workers keep the gateway's
    user), or ``FIRST-LAST``. Raises ValueError for anything else."""
    text = value.strip().lower()
    if text == "off":
        return None
    match = _RANGE.match(DEFAULT_IDS if text == "auto" else text)
    if match is None:
        raise ValueError(f"{value!r} is not auto, off or a range FIRST-LAST of numeric ids")
    first, last = int(match[1]), int(match[2])
    if not 1000 <= first or last >= 2**31 - 1 or last - first < 3:
        raise ValueError(f"{value!r}: give at least 4 ids between 1000 and 2147483646")
    return IdRange(first, last)


def parse_names(value: str) -> tuple[str, ...]:
    """``COLDBREW_WORKER_ENV_PASSTHROUGH``: names separated by commas or spaces."""
    return tuple(name for name in re.split(r"[\s,]+", value) if name)


@dataclass(frozen=True)
class ContainmentConfig:
    passthrough: tuple[str, ...] = ()
    """Variables of the gateway's environment the operator passes on to every worker."""
    ids: IdRange | None = None
    """Users for workers when the gateway runs as root; None keeps them the gateway's."""


@dataclass(frozen=True)
class Tenant:
    """Whose workers: one endpoint's (or job's) user and private directory."""

    uid: int | None
    directory: Path
    """Its workers' sockets; its ``home`` and ``tmp`` beside them."""

    @property
    def home(self) -> Path:
        return self.directory / "home"


@dataclass(frozen=True)
class ContainedWorker:
    """A worker spec as the contained worker sees it."""

    sandbox: Sandbox
    model_dir: str
    env: dict[str, str]
    labels: dict[str, str]
    """Paths, as the worker sees them, -> the user's names, for its error messages."""
    tenant: Tenant


class Containment:
    def __init__(self, config: ContainmentConfig, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self.separate_users = config.ids is not None and os.geteuid() == 0
        self.base_env = base_env(config.passthrough)
        self._tenants: dict[str, Tenant] = {}
        self._uids = iter(config.ids.users[1:]) if config.ids is not None else iter(())
        self._ids = itertools.count()
        self.hide: list[str] = []
        self.expose: list[str] = []
        if self.separate_users:
            # Crossable, not listable: each tenant finds only its own directory in it.
            run_dir.chmod(0o711)
            for name in MOUNTPOINTS:
                (run_dir / name).mkdir(exist_ok=True)
                (run_dir / name).chmod(0o755)
            self.hide, self.expose = private_ancestors(_needed_paths(run_dir))

    @property
    def build_uid(self) -> int | None:
        """The user pip runs as when it installs a model's requirements (None: the gateway's)."""
        return self.config.ids.first if self.separate_users and self.config.ids is not None else None

    def tenant(self, name: str) -> Tenant:
        key = name.lower()
        tenant = self._tenants.get(key)
        if tenant is not None:
            return tenant
        uid = next(self._uids, None) if self.separate_users else None
        if self.separate_users and uid is None:
            raise OSError("COLDBREW_WORKER_IDS has no user left for another endpoint")
        directory = self.run_dir / (f"u{uid}" if uid is not None else f"t{next(self._ids)}")
        directory.mkdir(mode=0o700)
        for sub in ("home", "tmp"):
            (directory / sub).mkdir(mode=0o700)
        if uid is not None:
            for path in (directory, directory / "home", directory / "tmp"):
                os.chown(path, uid, uid)
        tenant = Tenant(uid, directory)
        self._tenants[key] = tenant
        return tenant

    def contain(self, spec: WorkerSpec, port: int | None = None) -> ContainedWorker:
        """The sandbox, model directory, environment and labels of a worker for ``spec``."""
        tenant = self.tenant(spec.tenant or "-")
        env = dict(spec.env)
        labels = dict(spec.labels)
        model_dir = spec.model_dir
        binds: list[Bind] = []
        if self.separate_users:
            sources = {spec.model_dir: str(self.run_dir / "model")}
            submit = env.get(SUBMIT_DIRECTORY, "").strip()
            if os.path.isabs(submit) and os.path.isdir(submit) and not _under(submit, spec.model_dir):
                sources[submit] = str(self.run_dir / "source")
            installed = env.get(INSTALLED_REQUIREMENTS)
            if installed and os.path.isdir(installed):
                sources[installed] = str(self.run_dir / "packages")
            binds = [Bind(source=s, target=t) for s, t in sources.items()]
            # Longest first: no source is a prefix of another, but be sure.
            for source, target in sorted(sources.items(), key=lambda st: -len(st[0])):
                env = {k: v.replace(source, target) for k, v in env.items()}
                if source in labels:
                    labels[target] = labels[source]
            model_dir = sources[spec.model_dir]
        env.update(HOME=str(tenant.home), TMPDIR=str(tenant.directory / "tmp"))
        content = self._content_groups()
        groups = sorted({gid for gid in (_gid(b.source) for b in binds) if gid in content})
        sandbox = Sandbox(
            uid=tenant.uid,
            gid=tenant.uid,
            groups=groups,
            hide=self.hide if binds else [],
            expose=self.expose if binds else [],
            binds=binds,
            network=not spec.network_isolation,
        )
        return ContainedWorker(sandbox, model_dir, env, labels, tenant)

    def _content_groups(self) -> range:
        return self.config.ids.groups if self.config.ids is not None else range(0)


def private_ancestors(paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """The directories an unprivileged user cannot cross on the way to ``paths`` (the topmost of
    each), and which of ``paths`` to bind back under them. Paths that others could not read even
    with their ancestors crossable are left out: exposing them would not help."""
    hide: set[str] = set()
    expose: set[str] = set()
    for path in {os.path.realpath(p) for p in paths if os.path.isdir(p)}:
        try:
            if os.stat(path).st_mode & 0o005 != 0o005:
                continue
            blocked = next(
                (str(a) for a in reversed(Path(path).parents) if not os.stat(a).st_mode & stat.S_IXOTH),
                None,
            )
        except OSError:
            continue
        if blocked is not None:
            hide.add(blocked)
            expose.add(path)
    exposed = [e for e in expose if not any(o != e and _under(e, o) for o in expose)]
    return sorted(hide), sorted(exposed)


def _needed_paths(run_dir: Path) -> list[str]:
    """What a worker reads besides its model: the interpreter and its packages, coldbrew, the
    run directory, and the directories on PATH (a user's server command)."""
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    paths += [p for p in sys.path if os.path.isabs(p)]
    paths.append(str(Path(coldbrew.__file__).resolve().parent.parent))
    paths.append(str(run_dir))
    paths += [p for p in os.environ.get("PATH", "").split(os.pathsep) if os.path.isabs(p)]
    return paths


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _gid(path: str) -> int:
    try:
        return os.stat(path).st_gid
    except OSError:
        return -1
