"""The local backend: each execution environment is a worker process on this machine.

Workers are forked from a zygote that has already imported numpy, scikit-learn and the worker
itself, so a cold start pays only for fork and the model load. Until the zygote is ready (or if it
is turned off or dies) workers start as fresh interpreters instead; both kinds get the same
environment and behave alike. Workers listen on Unix sockets in a private run directory and
report readiness, or the loader's error, as one JSON line on a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from coldbrew.backends.base import WorkerSpec, WorkerStartError
from coldbrew.backends.cgroups import MemoryCgroups, WorkerCgroup
from coldbrew.backends.worker_client import WorkerClient, WorkerConnectionError
from coldbrew.worker.runtimes import RUNTIME_PRELOAD
from coldbrew.worker.zygote import THREAD_ENV

log = logging.getLogger("coldbrew.backends")


def _rss(pid: int, children: bool = True) -> int:
    try:
        process = psutil.Process(pid)
        total = process.memory_info().rss
        if children:
            for child in process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
        return int(total)
    except psutil.Error:
        return 0


class _Limited:
    """What both kinds of worker share: the memory cgroup that may limit them."""

    cgroup: WorkerCgroup | None = None
    pid: int
    counts_children = False
    """Only a user's own server may start processes of its own; scanning for children of
    coldbrew's workers would cost the watchdog a walk over every process, for nothing."""

    def rss_bytes(self) -> int:
        """Resident memory of the worker (and of what it started, for a user's server)."""
        return _rss(self.pid, children=self.counts_children)

    @property
    def memory_enforced(self) -> bool:
        return self.cgroup is not None

    def oom_killed(self) -> bool:
        return self.cgroup is not None and self.cgroup.oom_killed()

    def _release_cgroup(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()


class SpawnedWorker(_Limited):
    """A worker started as a fresh interpreter: a child of the gateway."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        socket_path: str | None,
        setup_ms: float,
        address: str | None = None,
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.address = address or f"unix:{socket_path}"
        self.socket_path = socket_path
        self.setup_ms = setup_ms
        self.forked = False

    def is_alive(self) -> bool:
        return self.process.returncode is None

    async def stop(self, grace_s: float = 2.0) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        self._release_cgroup()


class ForkedWorker(_Limited):
    """A worker forked by the zygote: not our child, so its exit is followed through a pidfd."""

    def __init__(self, pid: int, socket_path: str, setup_ms: float) -> None:
        self.pid = pid
        self.address = f"unix:{socket_path}"
        self.socket_path = socket_path
        self.setup_ms = setup_ms
        self.forked = True
        self._exited = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self._pidfd = None
            self._exited.set()
            return
        self._loop.add_reader(self._pidfd, self._on_exit)

    def _on_exit(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._exited.set()

    def is_alive(self) -> bool:
        return not self._exited.is_set()

    async def stop(self, grace_s: float = 2.0) -> None:
        if self.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self._exited.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                await self._exited.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self._release_cgroup()


class Zygote:
    """The zygote process, started by the gateway, restarted by it if it dies."""

    def __init__(self, process: asyncio.subprocess.Process, socket_path: str, modules: list[str]) -> None:
        self.process = process
        self.socket_path = socket_path
        self.modules = modules

    def is_alive(self) -> bool:
        return self.process.returncode is None

    def rss_bytes(self) -> int:
        return _rss(self.process.pid, children=False)

    async def fork(self, fields: dict[str, Any], status_fd: int) -> int:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, self.socket_path)
            socket.send_fds(sock, [json.dumps({"config": fields}).encode()], [status_fd])
            reply = await loop.sock_recv(sock, 65536)
        answer = json.loads(reply) if reply else {"error": "the zygote closed the connection"}
        if "pid" not in answer:
            raise OSError(answer.get("error", "the zygote refused"))
        return int(answer["pid"])

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 3)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


class LocalBackend:
    def __init__(
        self,
        startup_timeout_s: float = 120.0,
        zygote: bool = True,
        preload: Mapping[str, Sequence[str]] | None = None,
        memory_cgroups: bool = True,
        eager_runtimes: Sequence[str] = ("sklearn",),
    ) -> None:
        self.cgroups = MemoryCgroups.detect() if memory_cgroups else None
        # Short path: a Unix socket path must fit in 108 bytes. The pid in the name lets a later
        # gateway remove the run directory of one that was killed.
        _sweep_run_dirs(Path(tempfile.gettempdir()))
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"coldbrew-{os.getpid()}-"))
        self.startup_timeout_s = startup_timeout_s
        self.use_zygote = zygote
        self.preload = dict(preload if preload is not None else RUNTIME_PRELOAD)
        # One zygote per runtime (a set of framework imports), started the first time a model of
        # that runtime cold-starts (the eager ones at once), and restarted if it dies.
        self.wanted_runtimes: set[str] = set(eager_runtimes) if zygote else set()
        self.zygotes: dict[str, Zygote] = {}
        self.zygote_restarts = 0
        self._zygote_starting: dict[str, asyncio.Task[None]] = {}
        self._zygote_failed: set[str] = set()
        self._ids = itertools.count()

    def _base_env(self, spec: WorkerSpec) -> dict[str, str]:
        env = dict(os.environ)
        for name in THREAD_ENV:
            env.setdefault(name, "1")
        env.update(spec.env)
        return env

    # --- zygotes -------------------------------------------------------------------------------

    def maintain(self) -> None:
        """Called periodically by serving: keeps a zygote running for every runtime in use."""
        for runtime in sorted(self.wanted_runtimes):
            self.ensure_zygote(runtime)

    @property
    def zygote(self) -> Zygote | None:
        """The scikit-learn zygote (the default runtime), if it runs."""
        return self.zygotes.get("sklearn")

    def helper_rss_bytes(self) -> int:
        """Memory held by the zygotes themselves."""
        return sum(z.rss_bytes() for z in self.zygotes.values() if z.is_alive())

    def ensure_zygote(self, runtime: str) -> None:
        """Start the runtime's zygote in the background unless it runs or is starting."""
        if not self.use_zygote or runtime not in self.preload or runtime in self._zygote_failed:
            return
        self.wanted_runtimes.add(runtime)
        current = self.zygotes.get(runtime)
        if current is not None and current.is_alive():
            return
        starting = self._zygote_starting.get(runtime)
        if starting is not None and not starting.done():
            return
        if current is not None:
            log.warning(
                "the %s zygote exited with status %s; restarting it", runtime, current.process.returncode
            )
            self.zygote_restarts += 1
            del self.zygotes[runtime]
        self._zygote_starting[runtime] = asyncio.create_task(self._start_zygote(runtime))

    async def wait_zygote(self, timeout: float, runtime: str = "sklearn") -> bool:
        starting = self._zygote_starting.get(runtime)
        if starting is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(starting), timeout)
        zygote = self.zygotes.get(runtime)
        return zygote is not None and zygote.is_alive()

    async def _start_zygote(self, runtime: str) -> None:
        socket_path = str(self.run_dir / f"zygote-{runtime}-{next(self._ids)}.sock")
        read_fd, write_fd = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "coldbrew.worker.zygote",
                "--socket",
                socket_path,
                "--status-fd",
                str(write_fd),
                "--preload",
                ",".join(self.preload[runtime]),
                pass_fds=(write_fd,),
                env=self._base_env(WorkerSpec(model_dir="", memory_mb=0)),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            os.close(write_fd)
        try:
            status = await asyncio.wait_for(_read_status(read_fd), self.startup_timeout_s)
        except TimeoutError:
            status = {"ready": False, "error": "timed out"}
        finally:
            os.close(read_fd)
        if not status.get("ready"):
            log.warning(
                "the %s zygote did not start (%s); its workers start as fresh interpreters",
                runtime,
                status.get("error"),
            )
            # Not retried: whatever stopped it (a preload that starts threads) would again.
            self.wanted_runtimes.discard(runtime)
            self._zygote_failed.add(runtime)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            return
        reported = status.get("modules")
        modules = [str(m) for m in reported] if isinstance(reported, list) else []
        self.zygotes[runtime] = Zygote(process, socket_path, modules)
        log.info(
            "%s zygote %d ready in %s ms with %s",
            runtime,
            process.pid,
            status.get("setup_ms"),
            ", ".join(modules),
        )

    # --- workers -------------------------------------------------------------------------------

    async def start(self, spec: WorkerSpec) -> SpawnedWorker | ForkedWorker:
        if spec.command is not None:
            return await self._start_command(spec, spec.command)
        socket_path = str(self.run_dir / f"w{os.getpid()}-{next(self._ids)}.sock")
        zygote = self.zygotes.get(spec.runtime)
        if zygote is None or not zygote.is_alive():
            zygote = None
            self.ensure_zygote(spec.runtime)  # for the next cold start of this runtime
        read_fd, write_fd = os.pipe()
        process: asyncio.subprocess.Process | None = None
        pid = 0
        try:
            if zygote is not None:
                fields = {
                    "model_dir": spec.model_dir,
                    "socket_path": socket_path,
                    "max_concurrency": spec.environment_concurrency,
                    "env": spec.env,
                }
                try:
                    pid = await zygote.fork(fields, write_fd)
                except OSError as exc:
                    log.warning("the zygote could not fork a worker (%s); starting a fresh one", exc)
                    zygote = None
            if zygote is None:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "coldbrew.worker",
                    "--model-dir",
                    spec.model_dir,
                    "--socket",
                    socket_path,
                    "--status-fd",
                    str(write_fd),
                    "--max-concurrency",
                    str(spec.environment_concurrency),
                    pass_fds=(write_fd,),
                    env=self._base_env(spec),
                    stdin=asyncio.subprocess.DEVNULL,
                )
                pid = process.pid
        finally:
            os.close(write_fd)
        # Limited from the start, so the model load itself counts against MemorySizeInMB.
        cgroup = (
            self.cgroups.attach(pid, spec.memory_mb) if self.cgroups is not None and spec.memory_mb else None
        )
        try:
            status = await asyncio.wait_for(_read_status(read_fd), self.startup_timeout_s)
        except TimeoutError:
            await _kill(process, pid)
            raise WorkerStartError(
                f"The model did not become ready within {self.startup_timeout_s:.0f} s."
            ) from None
        finally:
            os.close(read_fd)
        if not status.get("ready"):
            if process is not None:
                await process.wait()
            error = str(status.get("error") or "the worker exited before it was ready")
            if cgroup is not None and cgroup.oom_killed():
                error = f"Loading the model needs more than its memory size of {spec.memory_mb} MB."
            if cgroup is not None:
                cgroup.remove()
            raise WorkerStartError(error)
        reported_ms = status.get("setup_ms")
        setup_ms = float(reported_ms) if isinstance(reported_ms, int | float) else 0.0
        worker: SpawnedWorker | ForkedWorker
        if process is not None:
            worker = SpawnedWorker(process, socket_path, setup_ms)
        else:
            worker = ForkedWorker(pid, socket_path, setup_ms)
        worker.cgroup = cgroup
        return worker

    async def _start_command(self, spec: WorkerSpec, command: str) -> SpawnedWorker:
        """A user's own server (``exec:`` images): it must answer GET /ping and POST /invocations
        on ``SAGEMAKER_BIND_TO_PORT``; it starts in the model directory."""
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise WorkerStartError(f"The serve command {command!r} cannot be parsed: {exc}.") from None
        if not argv:
            raise WorkerStartError("The serve command is empty: use Image 'exec:COMMAND ARGS'.")
        port = _free_port()
        env = self._base_env(spec)
        env.update(
            SAGEMAKER_BIND_TO_PORT=str(port), SM_MODEL_DIR=spec.model_dir, COLDBREW_MODEL_DIR=spec.model_dir
        )
        started = time.perf_counter()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=spec.model_dir or None,
                stdin=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            raise WorkerStartError(
                f"The serve command {argv[0]!r} could not be started: {exc.strerror or exc}."
            ) from None
        cgroup = (
            self.cgroups.attach(process.pid, spec.memory_mb)
            if self.cgroups is not None and spec.memory_mb
            else None
        )
        address = f"http://127.0.0.1:{port}"
        client = WorkerClient(address)
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            while True:
                if process.returncode is not None:
                    raise WorkerStartError(
                        f"The serve command exited with status {process.returncode} before answering /ping "
                        f"on port {port}."
                    )
                with contextlib.suppress(WorkerConnectionError, OSError):
                    if (await client.request("GET", "/ping", {})).status == 200:
                        break
                if time.monotonic() > deadline:
                    raise WorkerStartError(
                        f"The serve command did not answer GET /ping with 200 on port {port} within "
                        f"{self.startup_timeout_s:.0f} s."
                    )
                await asyncio.sleep(0.02)
        except WorkerStartError:
            await _kill(process, process.pid)
            if cgroup is not None:
                cgroup.remove()
            raise
        finally:
            await client.aclose()
        worker = SpawnedWorker(process, None, (time.perf_counter() - started) * 1000, address=address)
        worker.cgroup = cgroup
        worker.counts_children = True
        return worker

    async def close(self) -> None:
        for task in self._zygote_starting.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(z.stop() for z in self.zygotes.values()), return_exceptions=True)
        if self.cgroups is not None:
            self.cgroups.remove()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _sweep_run_dirs(tmp: Path) -> None:
    for run_dir in tmp.glob("coldbrew-*-*"):
        pid = run_dir.name.split("-")[1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)) and run_dir.is_dir():
            shutil.rmtree(run_dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _kill(process: asyncio.subprocess.Process | None, pid: int) -> None:
    if process is not None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
    elif pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def _read_status(fd: int) -> dict[str, object]:
    """The one JSON status line a worker or zygote writes on its pipe (EOF without one: failed)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    data = bytearray()
    finished: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        data.extend(chunk)
        if (not chunk or b"\n" in data) and not finished.done():
            finished.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await finished
    finally:
        loop.remove_reader(fd)
    if not data.strip():
        return {"ready": False}
    try:
        status: dict[str, object] = json.loads(data.decode(errors="replace").splitlines()[0])
    except (json.JSONDecodeError, IndexError):
        return {"ready": False, "error": "the worker reported an unreadable status"}
    return status
