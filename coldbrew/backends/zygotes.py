"""Zygotes: one pre-importing process per runtime that forks workers, and their supervision.

A runtime's zygote is started the first time a model of that runtime cold-starts (the eager
runtimes at once), in the background, and restarted if it dies. One that fails to start is not
retried: whatever stopped it (a preload that starts threads) would again; its runtime's workers
then start as fresh interpreters.

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
import select
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from coldbrew.backends.containment import base_env as base_env_of
from coldbrew.backends.processes import ForkedWorker, child_env, rss
from coldbrew.backends.status import read_status
from coldbrew.worker.messages import ForkReply, WorkerLaunch, WorkerStatus

log = logging.getLogger("coldbrew.backends")


class Zygote:
    """The zygote process, started by the gateway, restarted by it if it dies."""

    def __init__(self, process: asyncio.subprocess.Process, socket_path: str) -> None:
        self.process = process
        self.socket_path = socket_path
        # Its exit, as the kernel sees it: ``returncode`` is set only once the child watcher has
        # reaped it, later than the workers it forked see it go.
        self._poll: select.poll | None = None
        self._pidfd: int | None = None
        # exited() is asked on the event loop (acquire) and from /metrics' thread (the zygotes'
        # memory); a poll object refuses concurrent use ("concurrent poll() invocation"), which
        # failed an invocation mid-acquire and left its environment leased.
        self._lock = threading.Lock()
        try:
            self._pidfd = os.pidfd_open(process.pid)
        except ProcessLookupError:
            return
        self._poll = select.poll()
        self._poll.register(self._pidfd, select.POLLIN)

    def exited(self) -> bool:
        """Whether the zygote process has exited, read from the kernel now (a cheap poll)."""
        with self._lock:
            if self._poll is None:
                return True
            if self.process.returncode is None and not self._poll.poll(0):
                return False
            self._forget_pidfd_locked()
            return True

    def _forget_pidfd(self) -> None:
        with self._lock:
            self._forget_pidfd_locked()

    def _forget_pidfd_locked(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
        self._pidfd, self._poll = None, None

    def is_alive(self) -> bool:
        return not self.exited()

    def rss_bytes(self) -> int:
        return rss(self.process.pid, children=False)

    async def fork(self, launch: WorkerLaunch, status_fd: int, output_fd: int | None = None) -> int:
        """Have the zygote fork a worker for ``launch``, reporting on ``status_fd``, its stdout and
        stderr on ``output_fd`` if given (else the zygote's); its pid."""
        loop = asyncio.get_running_loop()
        fds = [status_fd] if output_fd is None else [status_fd, output_fd]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, self.socket_path)
            socket.send_fds(sock, [launch.encoded()], fds)
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
        self._forget_pidfd()


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
    ) -> None:
        self.run_dir = run_dir
        # A zygote's environment is what every worker it forks starts from: never the gateway's own.
        self.base_env = dict(base_env) if base_env is not None else base_env_of()
        self.preload = dict(preload)
        self.startup_timeout_s = startup_timeout_s
        self.enabled = enabled
        self.wanted: set[str] = set(eager_runtimes) if enabled else set()
        self.running: dict[str, Zygote] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._failed: set[str] = set()
        self._ids = itertools.count()

    def maintain(self) -> None:
        """Start (or restart) the zygote of every runtime in use."""
        for runtime in sorted(self.wanted):
            self.ensure(runtime)

    def ready(self, runtime: str) -> Zygote | None:
        """The runtime's zygote if it runs; else None, and it is started for the next cold start."""
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
        if not status.ready:
            log.warning(
                "the %s zygote did not start (%s); its workers start as fresh interpreters",
                runtime,
                status.error,
            )
            self.wanted.discard(runtime)
            self._failed.add(runtime)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            return
        self.running[runtime] = Zygote(process, socket_path)
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
        await asyncio.gather(*(z.stop() for z in self.running.values()), return_exceptions=True)
