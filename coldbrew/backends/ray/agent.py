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
import time
from pathlib import Path

from coldbrew.artifacts.errors import ArtifactError
from coldbrew.artifacts.extract import Budget, unpack_file, write_stream
from coldbrew.backends.base import WorkerStartError
from coldbrew.backends.cgroups import MemoryCgroups
from coldbrew.backends.launch import launch_worker
from coldbrew.backends.processes import ForkedWorker, SpawnedWorker
from coldbrew.backends.ray.messages import (
    AgentInfo,
    ModelBundle,
    NodeReport,
    S3Fetch,
    StartReply,
    StartRequest,
    WorkerReport,
)
from coldbrew.backends.zygotes import ZYGOTE_IDLE_S, Zygotes
from coldbrew.inherited_env import base_env
from coldbrew.worker.messages import WorkerLaunch
from coldbrew.worker.runtimes import RUNTIME_PRELOAD

log = logging.getLogger("coldbrew.backends.ray")

NODE_ID_ENV = "COLDBREW_NODE_ID"
"""Set in every worker's environment: the Ray node it runs on (for its logs, and for tests)."""
OUTPUT_HELD_BYTES = 4 << 20
"""At most this much of one worker's output waits on the node for the next poll; past it the
newest is dropped (and a line says how much), so a chatty model cannot fill the agent's memory."""


class _Output:
    """A worker's stdout and stderr, read from its pipe on the agent's event loop until end of
    file, held for the gateway's next poll."""

    def __init__(self, read_fd: int) -> None:
        self.fd: int | None = read_fd
        self.held = bytearray()
        self.dropped = 0
        os.set_blocking(read_fd, False)
        asyncio.get_running_loop().add_reader(read_fd, self._read)

    def _read(self) -> None:
        if self.fd is None:
            return
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
        elif len(self.held) + len(chunk) > OUTPUT_HELD_BYTES:
            self.dropped += len(chunk)
        else:
            self.held += chunk

    def take(self) -> bytes:
        data = bytes(self.held)
        self.held.clear()
        if self.dropped:
            data += f"\ncoldbrew: {self.dropped} bytes of output dropped on the node\n".encode()
            self.dropped = 0
        return data

    def drain(self) -> bytes:
        """What is in the pipe now, and all held (a worker that failed to start: it is gone)."""
        while self.fd is not None:
            before = len(self.held) + self.dropped
            self._read()
            if len(self.held) + self.dropped == before:
                break
        return self.take()

    @property
    def closed(self) -> bool:
        return self.fd is None

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = None


class NodeAgent:
    def __init__(
        self,
        node_id: str,
        host: str,
        startup_timeout_s: float = 120.0,
        zygote: bool = True,
        memory_cgroups: bool = True,
        eager_runtimes: tuple[str, ...] = ("sklearn",),
        zygote_idle_s: float = ZYGOTE_IDLE_S,
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.zygote_enabled = zygote
        self.memory_cgroups = memory_cgroups
        self.eager_runtimes = eager_runtimes
        self.zygote_idle_s = zygote_idle_s
        # The pid in the name lets the local backend's sweep remove it after an agent was killed.
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"coldbrew-{os.getpid()}-"))
        self.models_dir = self.run_dir / "models"
        self.models_dir.mkdir()
        self.base_env = base_env()
        self.workers: dict[str, ForkedWorker | SpawnedWorker] = {}
        self.outputs: dict[str, _Output] = {}
        """Each worker's output, until its end and all of it has been polled."""
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
                idle_s=self.zygote_idle_s,
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

    async def fetch_model(self, fetch: S3Fetch) -> str | None:
        """Fetch a model from S3 and keep it if it hashes to the digest the head recorded for it;
        None if it is here now, else why not (the gateway then ships it from the head)."""
        if self.has_model(fetch.digest):
            return None
        return await asyncio.to_thread(self._fetch, fetch)

    def _fetch(self, fetch: S3Fetch) -> str | None:
        import httpx

        staging = Path(tempfile.mkdtemp(dir=self.run_dir, prefix="fetch-"))
        try:
            blob = staging / "download"
            with httpx.stream("GET", fetch.url, timeout=httpx.Timeout(60, connect=5)) as response:
                if response.status_code != 200:
                    return f"S3 answered {response.status_code} for {fetch.label}"
                raw = write_stream(response.iter_bytes(1 << 20), blob, Budget(fetch.max_bytes, fetch.label))
            name = fetch.label.rstrip("/").rpartition("/")[2]
            # As the head's cache makes a model directory of one fetched file: extracted safely
            # if it is a gzip archive, else kept under its name; and the same digest of it.
            digest = unpack_file(
                blob, name, staging / "model", fetch.max_bytes, fetch.label, "auto", raw_digest=raw
            )
            if digest != fetch.digest:
                # Changed in S3 since the head fetched it (or not what the head has): not served.
                return (
                    f"{fetch.label} hashed to {digest[:12]} on node {self.node_id[:8]}, "
                    f"not {fetch.digest[:12]} as on the head"
                )
            (staging / "model").rename(self.models_dir / fetch.digest)
            return None
        except (httpx.HTTPError, ArtifactError, OSError) as exc:
            return f"could not fetch {fetch.label} on node {self.node_id[:8]}: {exc}"
        finally:
            shutil.rmtree(staging, ignore_errors=True)

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
        # Head path -> this node's copy; the longest first, so a path inside another is rewritten whole.
        copies = {request.head_model_dir: model_dir}
        copies.update({head: self.models_dir / digest for head, digest in request.directories.items()})
        copies = dict(sorted(copies.items(), key=lambda hc: -len(hc[0])))
        for digest in [request.digest, *request.directories.values()]:
            if not (self.models_dir / digest).is_dir():
                # The gateway ships a model (and its other directories) before it starts a worker
                # for it; one that is not here was never verified, and is not served.
                return StartReply(error=f"model {digest[:12]} is not on node {self.node_id[:8]}")
        zygotes = self._zygote_supervisor()
        home = self.run_dir / f"w{next(self._ids)}"
        (home / "tmp").mkdir(parents=True)
        env = {k: _rewrite(v, {h: str(c) for h, c in copies.items()}) for k, v in request.env.items()}
        env.update(HOME=str(home), TMPDIR=str(home / "tmp"), **{NODE_ID_ENV: self.node_id})
        launch = WorkerLaunch(
            model_dir=str(model_dir),
            port=0,
            host=self.host,
            environment_concurrency=request.environment_concurrency,
            nice=request.nice,
            env=env,
        )
        # Its stdout and stderr: a pipe the agent reads, sent to the gateway with each poll.
        read_fd, write_fd = os.pipe()
        output = _Output(read_fd)
        # It listens on TCP: the socket path the worker object is given is never created, only
        # "removed" on stop (with the worker's home).
        try:
            worker, status = await launch_worker(
                launch,
                zygotes=zygotes,
                runtime=request.runtime,
                fresh=request.fresh,
                base_env=self.base_env,
                cgroups=self._cgroups,
                memory_mb=request.memory_mb,
                startup_timeout_s=self.startup_timeout_s,
                socket_path=str(home / "tcp"),
                output_fd=write_fd,
            )
        except WorkerStartError as exc:
            shutil.rmtree(home, ignore_errors=True)
            return StartReply(
                error=_rewrite(str(exc), {str(c): h for h, c in copies.items()}), output=_failed(output)
            )
        except BaseException:
            output.close()
            raise
        finally:
            os.close(write_fd)  # the worker has its copy
        if status.port is None:
            await worker.stop()
            shutil.rmtree(home, ignore_errors=True)
            return StartReply(
                error="the worker reported ready without the port it listens on", output=_failed(output)
            )
        self.workers[request.worker_id] = worker
        self.outputs[request.worker_id] = output
        return StartReply(
            pid=worker.pid,
            port=status.port,
            setup_ms=worker.setup_ms,
            memory_enforced=worker.cgroup is not None,
            trace=getattr(worker, "start_trace", None),
            replied=time.monotonic(),
        )

    async def stop_worker(self, worker_id: str, grace_s: float = 2.0) -> None:
        worker = self.workers.pop(worker_id, None)
        if worker is not None:
            await worker.stop(grace_s)
            shutil.rmtree(Path(worker.address.removeprefix("unix:")).parent, ignore_errors=True)

    async def poll(self, runtimes: tuple[str, ...] | None = None) -> NodeReport:
        """The node's workers now; those that exited on their own are reported once, then gone.

        ``runtimes`` are those the gateway's deployed pools use (None: not known yet): the zygote
        of any other runtime, with no worker left, is stopped after the idle period, as on one
        machine.
        """
        zygotes = self._zygote_supervisor()
        if runtimes is not None:
            zygotes.use(runtimes)
        zygotes.maintain()  # restart a zygote that died, stop one idle long enough
        alive: dict[str, WorkerReport] = {}
        exited: dict[str, WorkerReport] = {}
        for worker_id, worker in list(self.workers.items()):
            if worker.is_alive():
                alive[worker_id] = WorkerReport(worker.rss_bytes())
            else:
                exited[worker_id] = WorkerReport(0, worker.oom_killed())
                await self.stop_worker(worker_id)
        output: dict[str, bytes] = {}
        closed: list[str] = []
        for worker_id, stream in list(self.outputs.items()):
            data = stream.take()
            if data:
                output[worker_id] = data
            if stream.closed:
                closed.append(worker_id)
                del self.outputs[worker_id]
        return NodeReport(alive, exited, zygotes.rss_bytes(), output, tuple(closed))

    async def shutdown(self) -> None:
        """Stop every worker and zygote and remove the node's run directory."""
        await asyncio.gather(*(self.stop_worker(w) for w in list(self.workers)), return_exceptions=True)
        for stream in self.outputs.values():
            stream.close()
        self.outputs.clear()
        if self._zygotes is not None:
            await self._zygotes.close()
        if self._cgroups is not None:
            self._cgroups.remove()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.run_dir)


def _failed(output: _Output) -> bytes:
    """The output of a worker that did not become ready (it is gone), its pipe closed."""
    data = output.drain()
    output.close()
    return data


def _rewrite(text: str, paths: dict[str, str]) -> str:
    """``text`` with each path in ``paths`` replaced by its value (longest first)."""
    for old in sorted(paths, key=len, reverse=True):
        text = text.replace(old, paths[old])
    return text
