"""The local backend: each execution environment is a worker process on this machine.

Workers are forked from a zygote that has already imported numpy, scikit-learn and the worker
itself, so a cold start pays only for fork and the model load. Until the zygote is ready (or if it
is turned off or dies) workers start as fresh interpreters instead; both kinds get the same
environment and behave alike. Workers listen on Unix sockets in a private run directory and
report readiness, or the loader's error, on a status pipe. A model may instead bring its own
server (``exec:`` images).

The pieces: :mod:`~coldbrew.backends.zygotes` (the zygotes and their supervision),
:mod:`~coldbrew.backends.fresh` (fresh interpreters), :mod:`~coldbrew.backends.user_server`
(``exec:`` servers), :mod:`~coldbrew.backends.status` (the status pipe) and
:mod:`~coldbrew.backends.processes` (the running workers); this module composes them.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import psutil

from coldbrew.backends.base import WorkerSpec, WorkerStartError
from coldbrew.backends.cgroups import MemoryCgroups
from coldbrew.backends.containment import Containment, ContainmentConfig
from coldbrew.backends.launch import launch_worker
from coldbrew.backends.processes import ForkedWorker, SpawnedWorker
from coldbrew.backends.templates import Templates
from coldbrew.backends.user_server import start_user_server
from coldbrew.backends.zygotes import ZYGOTE_IDLE_S, Zygotes
from coldbrew.worker.messages import WorkerLaunch
from coldbrew.worker.runtimes import RUNTIME_PRELOAD

log = logging.getLogger("coldbrew.backends")


class LocalBackend:
    def __init__(
        self,
        startup_timeout_s: float = 120.0,
        zygote: bool = True,
        preload: Mapping[str, Sequence[str]] | None = None,
        memory_cgroups: bool = True,
        eager_runtimes: Sequence[str] = ("sklearn",),
        containment: ContainmentConfig | None = None,
        zygote_idle_s: float = ZYGOTE_IDLE_S,
        templates: Templates | None = None,
    ) -> None:
        self.cgroups = MemoryCgroups.detect() if memory_cgroups else None
        # Short path: a Unix socket path must fit in 108 bytes. The pid in the name lets a later
        # gateway remove the run directory of one that was killed.
        _sweep_run_dirs(Path(tempfile.gettempdir()))
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"coldbrew-{os.getpid()}-"))
        self.startup_timeout_s = startup_timeout_s
        self.containment = Containment(containment or ContainmentConfig(), self.run_dir)
        self.zygote_supervisor = Zygotes(
            self.run_dir,
            preload if preload is not None else RUNTIME_PRELOAD,
            startup_timeout_s,
            enabled=zygote,
            eager_runtimes=eager_runtimes,
            base_env=self.containment.base_env,
            idle_s=zygote_idle_s,
        )
        # Off unless asked for (serving's default settings ask): a backend built by hand, in a
        # test, loads each worker's model itself as before.
        self.templates = templates if templates is not None and zygote else Templates(enabled=False)
        self._ids = itertools.count()

    # --- zygotes -------------------------------------------------------------------------------

    def maintain(self) -> None:
        """Called periodically by serving: keeps a zygote running for every runtime in use, stops
        idle templates."""
        self.zygote_supervisor.maintain()
        self.templates.maintain()

    def use_runtimes(self, runtimes: Collection[str]) -> None:
        """The runtimes deployed pools use: the others' zygotes are stopped after an idle period."""
        self.zygote_supervisor.use(runtimes)

    def helper_rss_bytes(self) -> int:
        """Memory held by the zygotes and the model templates themselves."""
        return self.zygote_supervisor.rss_bytes() + self.templates.unique_bytes()

    # --- workers -------------------------------------------------------------------------------

    async def start(self, spec: WorkerSpec) -> SpawnedWorker | ForkedWorker:
        try:
            contained = self.containment.contain(spec)
        except OSError as exc:
            raise WorkerStartError(f"The worker could not be prepared: {exc.strerror or exc}.") from None
        if spec.command is not None:
            return await start_user_server(
                spec, spec.command, self.cgroups, self.startup_timeout_s, self.containment, contained
            )
        # In the tenant's own directory, where a worker of its own user can create it.
        socket_path = str(contained.tenant.directory / f"w{os.getpid()}-{next(self._ids)}.sock")
        launch = WorkerLaunch(
            model_dir=contained.model_dir,
            socket_path=socket_path,
            environment_concurrency=spec.environment_concurrency,
            nice=spec.nice,
            env=contained.env,
            sandbox=contained.sandbox,
        )
        try:
            worker, _ = await launch_worker(
                launch,
                zygotes=self.zygote_supervisor,
                runtime=spec.runtime,
                fresh=spec.fresh,
                base_env=self.containment.base_env,
                cgroups=self.cgroups,
                memory_mb=spec.memory_mb,
                startup_timeout_s=self.startup_timeout_s,
                socket_path=socket_path,
                output_fd=spec.output_fd,
                templates=self.templates,
            )
        except WorkerStartError as exc:
            error = str(exc)
            for path, label in sorted(contained.labels.items(), key=lambda pl: -len(pl[0])):
                error = error.replace(path, label)
            raise WorkerStartError(error) from None
        return worker

    async def close(self) -> None:
        await self.templates.close()
        await self.zygote_supervisor.close()
        if self.cgroups is not None:
            self.cgroups.remove()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _sweep_run_dirs(tmp: Path) -> None:
    for run_dir in tmp.glob("coldbrew-*-*"):
        pid = run_dir.name.split("-")[1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)) and run_dir.is_dir():
            shutil.rmtree(run_dir, ignore_errors=True)
