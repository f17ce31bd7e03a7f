"""Model templates, as the gateway keeps them: one process per launch (model, environment,
containment) that has loaded the model and forks its workers (:mod:`coldbrew.worker.template`).

The first cold start of a launch asks its runtime's zygote for a template, which loads the model
and forks that start's worker; every later cold start of the same launch forks from the template,
skipping the model's load. Workers of one template share its pages copy-on-write. A moment after
each cold start the template forks a spare, which the gateway moves into a memory cgroup of the
model's size at once: the next cold start hands the spare its listener and pipes, and costs
neither a fork nor a cgroup move (the move alone waits 6-13 ms in the kernel).

A template is not an environment: it serves nothing, so scale to zero still leaves none of the
model's workers running. It is memory held for a model that may be invoked again, and so is
bounded (issue 18, "nothing held for nobody"):

- its memory (what stopping it frees: its unique set size) is counted with the zygotes' in the
  memory budget;
- once none of its workers has run for ``idle_s`` (``COLDBREW_TEMPLATE_IDLE_S``) it is stopped,
  and the next cold start of the model starts a new one;
- when the templates together hold more than ``max_bytes`` (``COLDBREW_TEMPLATE_MEMORY_MB``), the
  least recently used ones without workers are stopped first.

A template is never stopped while a worker it forked runs: those workers exit with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
from pydantic import ValidationError

from coldbrew.backends.base import WorkerStartError
from coldbrew.backends.cgroups import MemoryCgroups, WorkerCgroup
from coldbrew.backends.processes import ExitWatch, ForkedWorker
from coldbrew.backends.zygotes import Zygote, ZygoteChild
from coldbrew.worker.messages import ForkReply, TemplateFork, TemplateStart, TemplateStatus, WorkerLaunch

log = logging.getLogger("coldbrew.backends")

TEMPLATE_IDLE_S = 600.0
"""How long a template whose workers have all gone is kept for the model's next cold start."""
TEMPLATE_MEMORY_MB = 1024
"""What the templates together may hold before the least recently used idle ones are stopped."""

_FORK_TIMEOUT_S = 5.0
"""A template answers a fork within milliseconds; one that does not is stuck and is stopped."""
SPARE_DELAY_S = 0.1
"""How long after a cold start its template forks the next spare."""
_MEMORY_TTL_S = 1.0
"""How long a template's measured memory is reused (a measurement reads /proc/PID/smaps_rollup)."""


class Template:
    """One template process (a child of its zygote, not of ours) and its channel."""

    def __init__(
        self,
        key: str,
        pid: int,
        channel: socket.socket,
        zygote: Zygote,
        cgroup: WorkerCgroup | None,
        clock: Callable[[], float],
        cgroups: MemoryCgroups | None = None,
        memory_mb: int = 0,
        background: bool = False,
    ) -> None:
        self.key = key
        self.pid = pid
        self.channel = channel
        self.zygote = zygote
        self.cgroup = cgroup
        self.clock = clock
        self.last_used = clock()
        self.workers: list[ForkedWorker] = []
        self.broken = False
        """Its channel failed mid-request: it forks nothing more and is stopped."""
        self._watch = ExitWatch(pid)
        self._cgroups = cgroups
        self._memory_mb = memory_mb
        self._background = background
        self.spare: Spare | None = None
        """A child forked ahead, in its cgroup already, waiting to become the next cold start's
        worker: that start then costs neither a fork nor a cgroup move."""
        self._replenishing: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._memory: tuple[float, int] = (-_MEMORY_TTL_S, 0)
        self._memory_lock = threading.Lock()

    def exited(self) -> bool:
        return self.broken or self._watch.exited()

    def busy(self) -> bool:
        """Whether a worker it forked still runs (noted as a use: its idle time starts after)."""
        self.workers = [w for w in self.workers if w.is_alive()]
        if self.workers:
            self.last_used = self.clock()
        return bool(self.workers)

    def unique_bytes(self) -> int:
        """What stopping it would free: memory no other process shares (not the zygote's pages),
        its spare's included."""
        with self._memory_lock:
            measured, size = self._memory
            if self.clock() - measured < _MEMORY_TTL_S:
                return size
            size = 0
            spare = self.spare
            for pid in (self.pid, spare.pid if spare is not None else None):
                if pid is not None:
                    with contextlib.suppress(psutil.Error):
                        size += int(psutil.Process(pid).memory_full_info().uss)
            self._memory = (self.clock(), size)
            return size

    async def fork(
        self, launch: WorkerLaunch, status_fd: int, output_fd: int | None
    ) -> tuple[int, WorkerCgroup | None]:
        """A worker of this template listening as ``launch`` says: its pid, and its cgroup if it
        is in one already (it was the spare). Forks the next spare meanwhile."""
        request = TemplateFork(socket_path=launch.socket_path, port=launch.port, host=launch.host)
        fds = [status_fd] if output_fd is None else [status_fd, output_fd]
        self.last_used = self.clock()
        try:
            spare = self._take_spare()
            if spare is not None:
                try:
                    socket.send_fds(spare.channel, [request.encoded()], fds)
                except OSError as exc:
                    log.info("the spare %d of template %d is gone (%s); forking", spare.pid, self.pid, exc)
                    spare.discard()
                else:
                    spare.channel.close()
                    return spare.pid, spare.cgroup
            return await self._request(request, fds), None
        finally:
            self.replenish()

    async def _request(self, request: TemplateFork, fds: list[int]) -> int:
        loop = asyncio.get_running_loop()
        async with self._lock:  # one request at a time: the answers come back in order
            if self.broken:
                raise OSError("its channel is out of step")
            try:
                socket.send_fds(self.channel, [request.encoded()], fds)
                reply = await asyncio.wait_for(loop.sock_recv(self.channel, 65536), _FORK_TIMEOUT_S)
            except BaseException:
                # An answer may still come, and would be read as the next request's.
                self.broken = True
                raise
        if not reply:
            self.broken = True
        return _forked(reply, "the template")

    def _take_spare(self) -> Spare | None:
        spare, self.spare = self.spare, None
        if spare is not None and spare.watch.exited():
            spare.discard()
            return None
        return spare

    def replenish(self, delay_s: float = SPARE_DELAY_S) -> None:
        """Fork the next spare ``delay_s`` from now, unless it has one or one is coming."""
        if self.spare is not None or self._replenishing is not None or self.exited():
            return
        self._replenishing = asyncio.get_running_loop().create_task(self._fork_spare(delay_s))

    async def _fork_spare(self, delay_s: float) -> None:
        # Later than the start that used the last one: a fork and a cgroup move (which holds a
        # lock every fork on the machine takes) would compete with its first invocation.
        await asyncio.sleep(delay_s)
        if self.spare is not None or self.exited():
            self._replenishing = None
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = 0
        try:
            ours.setblocking(False)
            try:
                pid = await self._request(TemplateFork(socket_path="spare", spare=True), [theirs.fileno()])
            finally:
                theirs.close()
            cgroup = (
                await self._cgroups.attach_off_loop(pid, self._memory_mb, background=self._background)
                if self._cgroups is not None and self._memory_mb
                else None
            )
            spare = Spare(pid, ours, cgroup, ExitWatch(pid))
            if self.exited() or self.spare is not None:
                spare.discard()
            else:
                self.spare = spare
        except Exception as exc:  # the next cold start forks as without a spare
            log.info("template %d could not fork a spare: %s", self.pid, exc)
            ours.close()
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            self._replenishing = None

    async def stop(self) -> None:
        """Close its channel (it exits), SIGKILL if it has not within 3 s; remove its cgroup and
        its spare."""
        self.broken = True
        if self._replenishing is not None:
            self._replenishing.cancel()
        spare, self.spare = self.spare, None
        if spare is not None:
            spare.discard()
        self.channel.close()
        deadline = time.monotonic() + 3.0
        while not self.exited() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not self.exited():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self._watch.forget()
        if self.cgroup is not None:
            # Its pages are freed a moment after the exit; the directory can go once they are.
            for _ in range(50):
                self.cgroup.remove()
                if not self.cgroup.path.exists():
                    break
                await asyncio.sleep(0.01)


@dataclass
class Spare:
    """A template's child waiting, on ``channel``, for the listener of the next cold start."""

    pid: int
    channel: socket.socket
    cgroup: WorkerCgroup | None
    watch: ExitWatch

    def discard(self) -> None:
        """Close its channel (it exits on the end of it) and remove its cgroup once it has gone."""
        self.channel.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.watch.forget()
        if self.cgroup is not None:
            cgroup = self.cgroup
            # Its pages are freed a moment after its exit; the directory can go once they are.
            asyncio.get_running_loop().call_later(0.2, cgroup.remove)


@dataclass(frozen=True)
class TemplateForked:
    """A worker forked for a cold start by way of a template."""

    pid: int
    template: Template | None
    """None: the template could not be one (its load left threads) and is the worker itself."""
    cgroup: WorkerCgroup | None = None
    """The cgroup it is in already (the template's own, when it is the worker)."""


class TemplateChild(ZygoteChild):
    """A worker forked by a template: retiring once the template (or its zygote) has exited."""

    def __init__(self, pid: int, socket_path: str, setup_ms: float, template: Template) -> None:
        super().__init__(pid, socket_path, setup_ms, template.zygote)
        self.template = template

    def retiring(self) -> bool:
        return self.template.exited() or self.zygote.exited()


class Templates:
    """The templates of every launch, started on demand and stopped when idle or over budget."""

    def __init__(
        self,
        enabled: bool = True,
        idle_s: float = TEMPLATE_IDLE_S,
        max_bytes: int = TEMPLATE_MEMORY_MB * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.idle_s = idle_s
        self.max_bytes = max_bytes
        self.clock = clock
        self.ready: dict[str, Template] = {}
        self._starting: dict[str, asyncio.Future[Template | None]] = {}
        self._refused: dict[str, str] = {}
        """Launch key -> why its model cannot be a template (its load started threads)."""
        self._stopping: set[asyncio.Task[None]] = set()

    @staticmethod
    def key(runtime: str, launch: WorkerLaunch, memory_mb: int) -> str:
        """What workers of one template share: everything of the launch but its listener, and
        their memory size (a spare is limited to it before it is anyone's)."""
        listener = {"socket_path", "port", "host"}
        return f"{runtime}\0{memory_mb}\0{launch.model_dump_json(exclude=listener)}"

    async def fork(
        self,
        key: str,
        zygote: Zygote,
        launch: WorkerLaunch,
        status_fd: int,
        output_fd: int | None,
        *,
        cgroups: MemoryCgroups | None,
        memory_mb: int,
        timeout_s: float,
    ) -> TemplateForked | None:
        """Fork ``launch``'s worker from its template, starting the template if it has none; None
        if it cannot have one now (the caller forks from the zygote as before)."""
        if not self.enabled or key in self._refused:
            return None
        template = await self._usable(key, zygote, timeout_s)
        if template is not None:
            try:
                pid, cgroup = await template.fork(launch, status_fd, output_fd)
            except OSError as exc:
                log.warning("the template %d could not fork a worker (%s); stopping it", template.pid, exc)
                self._retire(template)
                return None
            return TemplateForked(pid, template, cgroup)
        if key in self._starting or key in self._refused:
            return None  # one starts, and did not finish in time
        return await self._start(key, zygote, launch, status_fd, output_fd, cgroups, memory_mb, timeout_s)

    async def _usable(self, key: str, zygote: Zygote, timeout_s: float) -> Template | None:
        template = self.ready.get(key)
        if template is not None and (template.exited() or template.zygote is not zygote):
            self._retire(template)
            template = None
        if template is None and key in self._starting:
            # Another cold start of the same model is loading it: waiting costs less than a
            # second load competing for the same cores.
            with contextlib.suppress(TimeoutError):
                template = await asyncio.wait_for(asyncio.shield(self._starting[key]), timeout_s)
        return template

    async def _start(
        self,
        key: str,
        zygote: Zygote,
        launch: WorkerLaunch,
        status_fd: int,
        output_fd: int | None,
        cgroups: MemoryCgroups | None,
        memory_mb: int,
        timeout_s: float,
    ) -> TemplateForked | None:
        starting: asyncio.Future[Template | None] = asyncio.get_running_loop().create_future()
        self._starting[key] = starting
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = 0
        cgroup: WorkerCgroup | None = None
        template: Template | None = None
        try:
            ours.setblocking(False)
            fds = [theirs.fileno(), status_fd] + ([output_fd] if output_fd is not None else [])
            try:
                pid = await zygote.request(TemplateStart(template=launch), fds)
            except OSError as exc:
                log.warning("the zygote could not fork a template (%s)", exc)
                ours.close()
                return None
            finally:
                theirs.close()
            # Limited from the start, so that the model's load counts against MemorySizeInMB.
            limiting = (
                asyncio.ensure_future(cgroups.attach_off_loop(pid, memory_mb, background=launch.nice > 0))
                if cgroups is not None and memory_mb
                else None
            )
            loop = asyncio.get_running_loop()
            try:
                try:
                    first = await asyncio.wait_for(loop.sock_recv(ours, 65536), timeout_s)
                except TimeoutError:
                    error = f"The model did not become ready within {timeout_s:.0f} s."
                    raise WorkerStartError(error) from None
                cgroup = await limiting if limiting is not None else None
            except BaseException:
                if limiting is not None:
                    limiting.cancel()  # the move still finishes, and its cgroup is removed
                raise
            status = _template_status(first)
            if not status.ready:
                ours.close()
                if status.serving:
                    log.info(
                        "the model of %s cannot be a template (%s): its workers fork from the zygote",
                        launch.model_dir,
                        status.error,
                    )
                    self._refused[key] = status.error or "its load started threads"
                # Either way the process is the worker: serving, or it has written the loader's
                # error on the worker's status pipe (its cgroup tells whether memory ran out).
                return TemplateForked(pid, None, cgroup)
            reply = await asyncio.wait_for(loop.sock_recv(ours, 65536), timeout_s)
            child = _forked(reply, "the template")
            template = Template(
                key, pid, ours, zygote, cgroup, self.clock, cgroups, memory_mb, launch.nice > 0
            )
            self.ready[key] = template
            template.replenish()
            log.info(
                "template %d of %s ready: its model loaded in %s ms; later cold starts fork from it",
                pid,
                launch.model_dir,
                status.setup_ms,
            )
            return TemplateForked(child, template)
        except BaseException:
            if template is None:
                ours.close()
                if pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                if cgroup is not None:
                    cgroup.remove()
            raise
        finally:
            del self._starting[key]
            starting.set_result(template)

    def maintain(self) -> None:
        """Stop templates idle for ``idle_s``, and the least recently used idle ones while the
        templates hold more than ``max_bytes``; forget those that exited."""
        now = self.clock()
        for template in list(self.ready.values()):
            if template.exited() or template.zygote.exited():
                self._retire(template)
            elif not template.busy() and now - template.last_used >= self.idle_s:
                log.info(
                    "stopping template %d: no worker of its model has run for %.0f s (it held %d MB)",
                    template.pid,
                    self.idle_s,
                    template.unique_bytes() // (1024 * 1024),
                )
                self._retire(template)
        held = self.unique_bytes()
        for template in sorted(self.ready.values(), key=lambda t: t.last_used):
            if held <= self.max_bytes:
                break
            if template.busy():
                continue
            held -= template.unique_bytes()
            log.info(
                "stopping template %d: the templates hold more than %d MB",
                template.pid,
                self.max_bytes // (1024 * 1024),
            )
            self._retire(template)

    def unique_bytes(self) -> int:
        """The memory the templates hold (for the memory budget)."""
        return sum(t.unique_bytes() for t in list(self.ready.values()))

    def _retire(self, template: Template) -> None:
        if self.ready.get(template.key) is template:
            del self.ready[template.key]
        task = asyncio.get_running_loop().create_task(template.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        for template in list(self.ready.values()):
            self._retire(template)
        await asyncio.gather(*self._stopping, return_exceptions=True)


def _template_status(message: bytes) -> TemplateStatus:
    if not message:
        return TemplateStatus(ready=False, error="the template exited before its model was loaded")
    try:
        return TemplateStatus.model_validate_json(message)
    except ValidationError:
        return TemplateStatus(ready=False, error="the template sent an unreadable status")


def _forked(reply: bytes, who: str) -> int:
    if not reply:
        raise OSError(f"{who} closed its channel")
    try:
        answer = ForkReply.model_validate_json(reply)
    except ValidationError:
        raise OSError(f"{who} sent an unreadable reply") from None
    if answer.pid is None:
        raise OSError(answer.error or f"{who} refused")
    return answer.pid
