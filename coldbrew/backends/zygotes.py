"""Zygotes: one pre-importing process per runtime that forks workers, and their supervision.

A runtime's zygote is started the first time a model of that runtime cold-starts (the eager
runtimes at once), in the background, and restarted if it dies. A preload module whose import
starts threads is left out by the zygote itself (:mod:`coldbrew.worker.zygote`), which then still
forks; each one left out is logged as a warning that names it, its threads and what it costs every
cold start, and shown in :meth:`Zygotes.states` (``/metrics``: ``coldbrew_zygote_info``). One that
fails to start all the same is not retried (whatever stopped it would again): that is an error in
the log and the state ``failed``, and its runtime's workers start as fresh interpreters.

Nothing is held for nobody (issue 18): serving tells the supervisor which runtimes its deployed
pools use (:meth:`Zygotes.use`); the zygote of a runtime none uses, with no worker of its own left,
is stopped once that has lasted ``idle_s`` (``COLDBREW_ZYGOTE_IDLE_S``), and started again by the
next cold start of that runtime, which waits for it as the first one after start does. The eager
runtimes' zygotes (scikit-learn) are kept: they are the default runtime's, small, and what keeps
the first deploy after a quiet spell fast. A supervisor never told what is in use stops none (the
Ray agent is told by the gateway on every poll).

The workers a zygote forked exit when it dies (each watches its parent, so that none outlives a
gateway that was killed): from the moment it is gone they are retiring (``ZygoteChild``), and
serving hands them nothing new while they finish what they have.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil
from pydantic import ValidationError

from coldbrew.backends.processes import ExitWatch, ForkedWorker, child_env, rss
from coldbrew.backends.status import read_status
from coldbrew.inherited_env import base_env as base_env_of
from coldbrew.worker.messages import (
    SPARE_NAME,
    TEMPLATE_NAME,
    ForkReply,
    LeftOutModule,
    TemplateStart,
    WorkerLaunch,
    WorkerStatus,
)

log = logging.getLogger("coldbrew.backends")

ZYGOTE_IDLE_S = 300.0
"""How long the zygote of a runtime no deployed pool uses is kept before it is stopped."""

ZygoteStateName = Literal["starting", "ready", "failed", "stopped"]


@dataclass(frozen=True)
class ZygoteState:
    """What one runtime's zygote is doing, for /metrics and the machine page."""

    runtime: str
    state: ZygoteStateName
    """``stopped``: after an idle period (it starts again on demand); ``failed``: it could not
    start, and the runtime's workers start as fresh interpreters."""
    pid: int | None
    rss_bytes: int
    modules: tuple[str, ...] = ()
    left_out: tuple[LeftOutModule, ...] = ()
    """Preload modules it does not hold (their import started threads): each cold start pays them."""
    error: str | None = None


class Zygote:
    """The zygote process, started by the gateway, restarted by it if it dies."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        socket_path: str,
        modules: Sequence[str] = (),
        left_out: Sequence[LeftOutModule] = (),
    ) -> None:
        self.process = process
        self.socket_path = socket_path
        self.modules = tuple(modules)
        self.left_out = tuple(left_out)
        # Its exit, as the kernel sees it: ``returncode`` is set only once the child watcher has
        # reaped it, later than the workers it forked see it go.
        self._watch = ExitWatch(process.pid)

    def exited(self) -> bool:
        """Whether the zygote process has exited, read from the kernel now (a cheap poll)."""
        if self.process.returncode is not None:
            self._watch.forget()
            return True
        return self._watch.exited()

    def is_alive(self) -> bool:
        return not self.exited()

    def rss_bytes(self) -> int:
        return rss(self.process.pid, children=False)

    def has_children(self) -> bool:
        """Whether a worker it forked, or one of its model templates forked, still runs (it would
        exit with the zygote). A template (or its spare) on its own does not count: it serves
        nothing."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            return False
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.name() not in (TEMPLATE_NAME, SPARE_NAME) and child.status() != psutil.STATUS_ZOMBIE:
                    return True
        return False

    async def fork(self, launch: WorkerLaunch, status_fd: int, output_fd: int | None = None) -> int:
        """Have the zygote fork a worker for ``launch``, reporting on ``status_fd``, its stdout and
        stderr on ``output_fd`` if given (else the zygote's); its pid."""
        return await self.request(launch, [status_fd] if output_fd is None else [status_fd, output_fd])

    async def request(self, message: WorkerLaunch | TemplateStart, fds: Sequence[int]) -> int:
        """Send one fork request with ``fds`` attached; the forked child's pid."""
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, self.socket_path)
            socket.send_fds(sock, [message.encoded()], list(fds))
            reply = await loop.sock_recv(sock, 65536)
        if not reply:
            raise OSError("the zygote closed the connection")
        try:
            answer = ForkReply.model_validate_json(reply)
        except ValidationError:
            raise OSError("the zygote sent an unreadable reply") from None
        if answer.pid is None:
            raise OSError(answer.error or "the zygote refused")
        return answer.pid

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 3)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._watch.forget()


class ZygoteChild(ForkedWorker):
    """A worker forked by ``zygote``: it is retiring once the zygote has exited."""

    def __init__(self, pid: int, socket_path: str, setup_ms: float, zygote: Zygote) -> None:
        super().__init__(pid, socket_path, setup_ms)
        self.zygote = zygote

    def retiring(self) -> bool:
        return self.zygote.exited()


class Zygotes:
    """Keeps a zygote running for every runtime in use."""

    def __init__(
        self,
        run_dir: Path,
        preload: Mapping[str, Sequence[str]],
        startup_timeout_s: float,
        enabled: bool = True,
        eager_runtimes: Sequence[str] = (),
        base_env: Mapping[str, str] | None = None,
        idle_s: float = ZYGOTE_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_dir = run_dir
        # A zygote's environment is what every worker it forks starts from: never the gateway's own.
        self.base_env = dict(base_env) if base_env is not None else base_env_of()
        self.preload = dict(preload)
        self.startup_timeout_s = startup_timeout_s
        self.enabled = enabled
        self.wanted: set[str] = set(eager_runtimes) if enabled else set()
        self.eager = frozenset(eager_runtimes)
        self.idle_s = idle_s
        self.clock = clock
        self.running: dict[str, Zygote] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, str] = {}
        """Runtime -> why its zygote did not start."""
        self._left_out: dict[str, tuple[LeftOutModule, ...]] = {}
        self._in_use: frozenset[str] | None = None
        """Runtimes of the deployed pools, as serving last said; None: never said (stop none)."""
        self._unused_since: dict[str, float] = {}
        self._last_used: dict[str, float] = {}
        """Runtime -> when a start last asked for its zygote."""
        self._stopped: set[str] = set()
        self._stopping: set[asyncio.Task[None]] = set()
        self._ids = itertools.count()

    def use(self, runtimes: Collection[str]) -> None:
        """The runtimes the deployed pools use now (serving says so periodically): the zygote of
        any other, with no worker left, is stopped after ``idle_s``."""
        in_use = frozenset(runtimes)
        now = self.clock()
        for runtime in in_use:
            self._unused_since.pop(runtime, None)
        for runtime in self.running.keys() - in_use:
            self._unused_since.setdefault(runtime, now)
        self._in_use = in_use

    def maintain(self) -> None:
        """Start (or restart) the zygote of every runtime in use; stop those idle long enough."""
        for runtime in sorted(self.wanted):
            if self._idle(runtime):
                self._stop_idle(runtime)
            else:
                self.ensure(runtime)

    def _idle(self, runtime: str) -> bool:
        if self._in_use is None or runtime in self._in_use or runtime in self.eager:
            return False
        zygote = self.running.get(runtime)
        if zygote is None or not zygote.is_alive():
            return False
        now = self.clock()
        since = max(self._unused_since.setdefault(runtime, now), self._last_used.get(runtime, -1.0))
        # Its workers would exit with it: never while one of them (draining, say) still runs.
        return now - since >= self.idle_s and not zygote.has_children()

    def _stop_idle(self, runtime: str) -> None:
        zygote = self.running.pop(runtime)
        self.wanted.discard(runtime)
        self._unused_since.pop(runtime, None)
        self._stopped.add(runtime)
        log.info(
            "stopping the %s zygote %d: no endpoint has used its runtime for %.0f s (it held %d MB); "
            "the next cold start of the runtime starts it again",
            runtime,
            zygote.process.pid,
            self.idle_s,
            zygote.rss_bytes() // (1024 * 1024),
        )
        task = asyncio.get_running_loop().create_task(zygote.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def states(self) -> list[ZygoteState]:
        """Every runtime's zygote that runs, starts, failed or was stopped idle, by runtime."""
        states = []
        for runtime in sorted({*self.running, *self._starting, *self._failed, *self._stopped}):
            zygote = self.running.get(runtime)
            starting = self._starting.get(runtime)
            left_out = self._left_out.get(runtime, ())
            if zygote is not None and zygote.is_alive():
                states.append(
                    ZygoteState(
                        runtime, "ready", zygote.process.pid, zygote.rss_bytes(), zygote.modules, left_out
                    )
                )
            elif starting is not None and not starting.done():
                states.append(ZygoteState(runtime, "starting", None, 0))
            elif runtime in self._failed:
                states.append(
                    ZygoteState(runtime, "failed", None, 0, left_out=left_out, error=self._failed[runtime])
                )
            else:
                states.append(ZygoteState(runtime, "stopped", None, 0, left_out=left_out))
        return states

    def ready(self, runtime: str) -> Zygote | None:
        """The runtime's zygote if it runs; else None, and it is started for the next cold start."""
        self._last_used[runtime] = self.clock()
        zygote = self.running.get(runtime)
        if zygote is not None and zygote.is_alive():
            return zygote
        self.ensure(runtime)
        return None

    async def wait_ready(self, runtime: str, patience_s: float) -> Zygote | None:
        """The runtime's zygote, waiting up to ``patience_s`` for one that is starting.

        A worker started as a fresh interpreter meanwhile would import the same modules again,
        competing for the same cores, and finish no sooner: the first deploy after start, or the
        first cold start of a runtime, waits for its zygote instead. None if it has none (turned
        off, failed, or not ready in time): the caller then starts a fresh interpreter.
        """
        zygote = self.ready(runtime)
        if zygote is not None:
            return zygote
        starting = self._starting.get(runtime)
        if starting is None or starting.done():
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(starting), patience_s)
        zygote = self.running.get(runtime)
        return zygote if zygote is not None and zygote.is_alive() else None

    def rss_bytes(self) -> int:
        """Memory held by the zygotes themselves."""
        return sum(z.rss_bytes() for z in self.running.values() if z.is_alive())

    def ensure(self, runtime: str) -> None:
        """Start the runtime's zygote in the background unless it runs or is starting."""
        if not self.enabled or runtime not in self.preload or runtime in self._failed:
            return
        self.wanted.add(runtime)
        self._stopped.discard(runtime)
        current = self.running.get(runtime)
        if current is not None and current.is_alive():
            return
        starting = self._starting.get(runtime)
        if starting is not None and not starting.done():
            return
        if current is not None:
            log.warning(
                "the %s zygote exited with status %s; restarting it", runtime, current.process.returncode
            )
            del self.running[runtime]
        self._starting[runtime] = asyncio.create_task(self._start(runtime))

    async def _start(self, runtime: str) -> None:
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
                env=child_env({}, self.base_env),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            os.close(write_fd)
        try:
            status = await asyncio.wait_for(read_status(read_fd), self.startup_timeout_s)
        except TimeoutError:
            status = WorkerStatus(ready=False, error="timed out")
        except asyncio.CancelledError:
            # The gateway is stopping while this zygote still imports: it must not live on to
            # bind a socket in a run directory that is being removed.
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        finally:
            os.close(read_fd)
        left_out = tuple(status.left_out or ())
        self._left_out[runtime] = left_out
        for module in left_out:
            log.warning(
                "the %s zygote leaves %s out of its preload: importing it started %s (in %s), and a "
                "process with threads cannot be forked safely; every cold start of this runtime "
                "imports it itself, about %.0f ms. A setting of that library that keeps it from "
                "starting threads at import would let the zygote hold it (coldbrew.worker.zygote."
                "QUIET_ENV has those known).",
                runtime,
                module.module,
                ", ".join(f"thread {name!r}" for name in module.threads) or "a thread",
                module.started_by or module.module,
                module.import_ms,
            )
        if not status.ready:
            error = status.error or "it exited before it was ready"
            log.error(
                "the %s zygote did not start (%s): it is not retried, and every cold start of this "
                "runtime is a fresh interpreter that imports %s itself (seconds, not milliseconds)",
                runtime,
                error,
                ", ".join(self.preload[runtime]),
            )
            self.wanted.discard(runtime)
            self._failed[runtime] = error
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            return
        self.running[runtime] = Zygote(process, socket_path, status.modules or (), left_out)
        log.info(
            "%s zygote %d ready in %s ms with %s",
            runtime,
            process.pid,
            status.setup_ms,
            ", ".join(status.modules or []),
        )

    async def close(self) -> None:
        for task in self._starting.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(
            *(z.stop() for z in self.running.values()), *self._stopping, return_exceptions=True
        )
