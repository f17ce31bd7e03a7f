"""The coldbrew agent: one long-lived process per Ray node (a Ray actor pinned to it).

It owns the node's per-runtime zygotes (the local backend's :class:`~coldbrew.backends.zygotes.
Zygotes`), so a cold start on a node is a fork there, not a new Ray actor or interpreter; it keeps
the node's artifact cache (each model once, verified by hash on arrival); it starts and stops
workers on request, each listening on TCP on the node's address so the gateway connects to it
directly, and reports their memory and exits when polled.

Plain Python: :mod:`coldbrew.backends.ray.backend` makes it an actor, so this module never
imports Ray. Its methods run on the actor's event loop (an async actor), one at a time between
awaits, as serving's run on the gateway's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from coldbrew.backends.cgroups import MemoryCgroups
from coldbrew.backends.containment import base_env
from coldbrew.backends.fresh import spawn_worker
from coldbrew.backends.processes import ForkedWorker, SpawnedWorker, kill
from coldbrew.backends.ray.messages import (
    AgentInfo,
    ModelBundle,
    NodeReport,
    StartReply,
    StartRequest,
    WorkerReport,
)
from coldbrew.backends.status import read_status
from coldbrew.backends.zygotes import ZygoteChild, Zygotes
from coldbrew.worker.messages import WorkerLaunch
from coldbrew.worker.runtimes import RUNTIME_PRELOAD

log = logging.getLogger("coldbrew.backends.ray")

ZYGOTE_PATIENCE_S = 30.0
NODE_ID_ENV = "COLDBREW_NODE_ID"
"""Set in every worker's environment: the Ray node it runs on (for its logs, and for tests)."""


class NodeAgent:
    def __init__(
        self,
        node_id: str,
        host: str,
        startup_timeout_s: float = 120.0,
        zygote: bool = True,
        memory_cgroups: bool = True,
        eager_runtimes: tuple[str, ...] = ("sklearn",),
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.zygote_enabled = zygote
        self.memory_cgroups = memory_cgroups
        self.eager_runtimes = eager_runtimes
        # The pid in the name lets the local backend's sweep remove it after an agent was killed.
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"coldbrew-{os.getpid()}-"))
        self.models_dir = self.run_dir / "models"
        self.models_dir.mkdir()
        self.base_env = base_env()
        self.workers: dict[str, ForkedWorker | SpawnedWorker] = {}
        self._cgroups: MemoryCgroups | None = None
        self._zygotes: Zygotes | None = None
        self._ids = itertools.count()

    def _zygote_supervisor(self) -> Zygotes:
        # Built on the actor's event loop (its tasks live there), not in __init__, which Ray runs
        # outside it.
        if self._zygotes is None:
            self._cgroups = MemoryCgroups.detect() if self.memory_cgroups else None
            self._zygotes = Zygotes(
                self.run_dir,
                RUNTIME_PRELOAD,
                self.startup_timeout_s,
                enabled=self.zygote_enabled,
                eager_runtimes=self.eager_runtimes,
                base_env=self.base_env,
            )
            self._zygotes.maintain()
        return self._zygotes

    async def ready(self) -> AgentInfo:
        self._zygote_supervisor()
        models = tuple(sorted(p.name for p in self.models_dir.iterdir() if p.is_dir()))
        return AgentInfo(self.node_id, self.host, os.getpid(), models)

    # --- artifacts -----------------------------------------------------------------------------

    def has_model(self, digest: str) -> bool:
        return (self.models_dir / digest).is_dir()

    async def receive_model(self, bundle: ModelBundle, data: bytes) -> None:
        """Keep a model shipped from the head, once its bytes hash to what the head sent."""
        if self.has_model(bundle.digest):
            return
        actual = hashlib.sha256(data).hexdigest()
        if actual != bundle.sha256:
            raise ValueError(
                f"model {bundle.digest[:12]} arrived with SHA-256 {actual[:12]}, not {bundle.sha256[:12]}"
            )
        await asyncio.to_thread(self._extract, bundle.digest, data)

    def _extract(self, digest: str, data: bytes) -> None:
        staging = Path(tempfile.mkdtemp(dir=self.run_dir, prefix="incoming-"))
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            # The "data" filter refuses links out of the tree, absolute paths and device files.
            tar.extractall(staging, filter="data")
        # Renamed into place whole: a start never sees a half-extracted model.
        staging.rename(self.models_dir / digest)

    # --- workers -------------------------------------------------------------------------------

    async def start_worker(self, request: StartRequest) -> StartReply:
        model_dir = self.models_dir / request.digest
        if not model_dir.is_dir():
            # The gateway ships a model before it starts a worker for it; one that is not here
            # was never verified, and is not served.
            return StartReply(error=f"model {request.digest[:12]} is not on node {self.node_id[:8]}")
        zygotes = self._zygote_supervisor()
        home = self.run_dir / f"w{next(self._ids)}"
        (home / "tmp").mkdir(parents=True)
        env = {k: v.replace(request.head_model_dir, str(model_dir)) for k, v in request.env.items()}
        env.update(HOME=str(home), TMPDIR=str(home / "tmp"), **{NODE_ID_ENV: self.node_id})
        launch = WorkerLaunch(
            model_dir=str(model_dir),
            port=0,
            host=self.host,
            environment_concurrency=request.environment_concurrency,
            nice=request.nice,
            env=env,
        )
        zygote = None if request.fresh else await zygotes.wait_ready(request.runtime, ZYGOTE_PATIENCE_S)
        read_fd, write_fd = os.pipe()
        process: asyncio.subprocess.Process | None = None
        pid = 0
        try:
            if zygote is not None:
                try:
                    pid = await zygote.fork(launch, write_fd)
                except OSError as exc:
                    log.warning("the zygote could not fork a worker (%s); starting a fresh one", exc)
                    zygote = None
            if zygote is None:
                process = await spawn_worker(launch, write_fd, self.base_env)
                pid = process.pid
        finally:
            os.close(write_fd)
        cgroup = (
            self._cgroups.attach(pid, request.memory_mb, background=request.nice > 0)
            if self._cgroups is not None and request.memory_mb
            else None
        )
        try:
            status = await asyncio.wait_for(read_status(read_fd), self.startup_timeout_s)
        except TimeoutError:
            await kill(process, pid)
            if cgroup is not None:
                cgroup.remove()
            return StartReply(error=f"The model did not become ready within {self.startup_timeout_s:.0f} s.")
        finally:
            os.close(read_fd)
        if not status.ready or status.port is None:
            if process is not None:
                await process.wait()
            error = status.error or "the worker exited before it was ready"
            if cgroup is not None and cgroup.oom_killed():
                error = f"Loading the model needs more than its memory size of {request.memory_mb} MB."
            if cgroup is not None:
                cgroup.remove()
            return StartReply(error=error.replace(str(model_dir), request.head_model_dir))
        # These classes follow the worker's exit on this loop (pidfd or child watcher). It listens
        # on TCP: the socket path they are given is never created, only "removed" on stop.
        placeholder = str(home / "tcp")
        worker: ForkedWorker | SpawnedWorker
        if process is not None:
            worker = SpawnedWorker(process, placeholder, status.setup_ms or 0.0)
        else:
            assert zygote is not None
            worker = ZygoteChild(pid, placeholder, status.setup_ms or 0.0, zygote)
        worker.cgroup = cgroup
        self.workers[request.worker_id] = worker
        return StartReply(
            pid=pid, port=status.port, setup_ms=status.setup_ms or 0.0, memory_enforced=cgroup is not None
        )

    async def stop_worker(self, worker_id: str, grace_s: float = 2.0) -> None:
        worker = self.workers.pop(worker_id, None)
        if worker is not None:
            await worker.stop(grace_s)
            shutil.rmtree(Path(worker.address.removeprefix("unix:")).parent, ignore_errors=True)

    async def poll(self) -> NodeReport:
        """The node's workers now; those that exited on their own are reported once, then gone."""
        zygotes = self._zygote_supervisor()
        zygotes.maintain()  # restart a zygote that died
        alive: dict[str, WorkerReport] = {}
        exited: dict[str, WorkerReport] = {}
        for worker_id, worker in list(self.workers.items()):
            if worker.is_alive():
                alive[worker_id] = WorkerReport(worker.rss_bytes())
            else:
                exited[worker_id] = WorkerReport(0, worker.oom_killed())
                await self.stop_worker(worker_id)
        return NodeReport(alive, exited, zygotes.rss_bytes())

    async def shutdown(self) -> None:
        """Stop every worker and zygote and remove the node's run directory."""
        await asyncio.gather(*(self.stop_worker(w) for w in list(self.workers)), return_exceptions=True)
        if self._zygotes is not None:
            await self._zygotes.close()
        if self._cgroups is not None:
            self._cgroups.remove()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.run_dir)
