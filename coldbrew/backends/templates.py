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

A template is never stopped while a worker it forked runs (or one it forked is starting): those
workers exit with it. One that has to go (its channel failed, its zygote was replaced) stops forking
at once and is stopped when its last worker has gone.

A template runs the model's code, so nothing it says is trusted beyond its own children: a pid it
reports is used only if that process's parent is the template.
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
from collections.abc import Callable, Coroutine
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
_MAX_REFUSED = 1000
"""Launches remembered as unable to have a template (the oldest forgotten first)."""
_CGROUP_REMOVE_S = 2.0
"""How long a cgroup's removal is retried: its pages are freed a moment after its process exits."""


OPT_OUT = "COLDBREW_TEMPLATES"
"""The key in a model's Environment that, false, has every cold start of it load the model."""
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def wants_template(launch: WorkerLaunch) -> bool:
    """Whether the model's Environment leaves templates on (serving validated the value)."""
    return launch.env.get(OPT_OUT, "true").strip().lower() not in _FALSE


class TemplateRefused(OSError):
    """The template answered a fork with an error: nothing was forked, the pipes are unused."""


class Background:
    """Clean-up tasks (stops, cgroup removals) run off the caller's path, awaited on close."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def run(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def join(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


async def remove_cgroup(cgroup: WorkerCgroup) -> None:
    """Remove ``cgroup`` once the kernel lets it (its process has exited and its pages are freed)."""
    deadline = time.monotonic() + _CGROUP_REMOVE_S
    while True:
        cgroup.remove()
        if not cgroup.path.exists() or time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.02)


def child_of(pid: int, parent: int) -> bool:
    """Whether ``pid`` is a live child of ``parent`` (so a process the template forked)."""
    try:
        process = psutil.Process(pid)
        return process.ppid() == parent and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


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
        background: Background,
        cgroups: MemoryCgroups | None = None,
        memory_mb: int = 0,
        low_priority: bool = False,
    ) -> None:
        self.key = key
        self.pid = pid
        self.channel = channel
        self.zygote = zygote
        self.cgroup = cgroup
        self.clock = clock
        self.last_used = clock()
        self.workers: list[ForkedWorker] = []
        self.starting: set[int] = set()
        """Workers it forked whose start is not over yet: it is busy while they start."""
        self.broken = False
        """It forks nothing more (its channel failed, or it is being stopped)."""
        self._watch = ExitWatch(pid)
        self._background = background
        self._cgroups = cgroups
        self._memory_mb = memory_mb
        self._low_priority = low_priority
        self.spare: Spare | None = None
        """A child forked ahead, in its cgroup already, waiting to become the next cold start's
        worker: that start then costs neither a fork nor a cgroup move."""
        self._replenishing: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._memory: tuple[float, int] = (-_MEMORY_TTL_S, 0)
        self._memory_lock = threading.Lock()

    def exited(self) -> bool:
        return self._watch.exited()

    def usable(self) -> bool:
        return not self.broken and not self._watch.exited()

    def busy(self) -> bool:
        """Whether a worker it forked runs or starts (noted as a use: its idle time starts after)."""
        self.workers = [w for w in self.workers if w.is_alive()]
        if self.workers or self.starting:
            self.last_used = self.clock()
            return True
        return False

    def adopt(self, pid: int, worker: ForkedWorker | None) -> None:
        """The start of its worker ``pid`` is over: ``worker`` runs, or (None) it did not start."""
        self.starting.discard(pid)
        if worker is not None:
            self.workers.append(worker)

    def unique_bytes(self) -> int:
        """What stopping it would free: memory no other process shares (not the zygote's pages),
        its spare's included."""
        with self._memory_lock:
            measured, size = self._memory
            if self.clock() - measured < _MEMORY_TTL_S:
                return size
            spare = self.spare
            size = sum(_private_bytes(pid) for pid in (self.pid, spare.pid if spare else None) if pid)
            self._memory = (self.clock(), size)
            return size

    async def fork(
        self, launch: WorkerLaunch, status_fd: int, output_fd: int | None
    ) -> tuple[int, WorkerCgroup | None]:
        """A worker of this template listening as ``launch`` says: its pid, and its cgroup if it
        is in one already (it was the spare). Forks the next spare meanwhile.

        Raises TemplateRefused if the template forked nothing (the pipes are unused), any other
        OSError if it is not known whether it did (the template is then broken)."""
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
                    spare.discard(self._background)
                else:
                    spare.handed_over()
                    self.starting.add(spare.pid)
                    return spare.pid, spare.cgroup
            pid = await self._request(request, fds)
            self.starting.add(pid)
            return pid, None
        finally:
            self.replenish()

    async def _request(self, request: TemplateFork, fds: list[int]) -> int:
        loop = asyncio.get_running_loop()
        async with self._lock:  # one request at a time: the answers come back in order
            if not self.usable():
                raise TemplateRefused("the template is stopping")
            try:
                socket.send_fds(self.channel, [request.encoded()], fds)
                reply = await asyncio.wait_for(loop.sock_recv(self.channel, 65536), _FORK_TIMEOUT_S)
            except BaseException:
                # An answer may still come, and would be read as the next request's.
                self.broken = True
                raise
        if not reply:
            self.broken = True
            raise OSError("the template closed its channel")
        pid = _forked(reply, "the template")
        if not child_of(pid, self.pid):
            self.broken = True
            raise OSError(f"the template reported process {pid}, which is not a child of it")
        return pid

    def _take_spare(self) -> Spare | None:
        spare, self.spare = self.spare, None
        if spare is not None and (spare.watch.exited() or not child_of(spare.pid, self.pid)):
            spare.discard(self._background)
            return None
        return spare

    def replenish(self, delay_s: float = SPARE_DELAY_S) -> None:
        """Fork the next spare ``delay_s`` from now, unless it has one or one is coming."""
        if self.spare is not None or self._replenishing is not None or not self.usable():
            return
        self._replenishing = asyncio.get_running_loop().create_task(self._fork_spare(delay_s))

    async def _fork_spare(self, delay_s: float) -> None:
        try:
            # Later than the start that used the last one: a fork and a cgroup move (which holds a
            # lock every fork on the machine takes) would compete with its first invocation.
            await asyncio.sleep(delay_s)
            if self.spare is None and self.usable():
                spare = await self._new_spare()
                if spare is not None and (self.spare is not None or not self.usable()):
                    spare.discard(self._background)
                elif spare is not None:
                    self.spare = spare
        finally:
            self._replenishing = None

    async def _new_spare(self) -> Spare | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        try:
            pid = await self._request(TemplateFork(socket_path="spare", spare=True), [theirs.fileno()])
        except Exception as exc:  # the next cold start forks as without a spare
            log.info("template %d could not fork a spare: %s", self.pid, exc)
            ours.close()
            return None
        finally:
            theirs.close()
        spare = Spare(pid, ours, None, ExitWatch(pid))
        if self._cgroups is not None and self._memory_mb:
            # Shielded: stopping the template waits for this task, so it ends only with the loop.
            move = self._cgroups.attach_off_loop(pid, self._memory_mb, background=self._low_priority)
            spare.cgroup = await asyncio.shield(move)
        return spare

    async def stop(self) -> None:
        """Close its channel (it exits), SIGKILL if it has not within 3 s; remove its cgroup and
        its spare."""
        self.broken = True
        if self._replenishing is not None:
            with contextlib.suppress(Exception):
                await self._replenishing  # it discards what it forks now that this is broken
        spare, self.spare = self.spare, None
        if spare is not None:
            spare.discard(self._background)
        self.channel.close()
        deadline = time.monotonic() + 3.0
        while not self._watch.exited() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not self._watch.exited():
            log.warning("template %d did not exit when its channel closed; killing it", self.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self._watch.forget()
        if self.cgroup is not None:
            await remove_cgroup(self.cgroup)


def _private_bytes(pid: int) -> int:
    """Memory of ``pid`` no other process shares: its USS, read from smaps_rollup, which a process
    that is not dumpable (a template) shows only to a reader that may ptrace it; else resident
    less file-backed pages (counts pages it still shares with its zygote, so errs high)."""
    try:
        process = psutil.Process(pid)
        try:
            return int(process.memory_full_info().uss)
        except psutil.AccessDenied:
            info = process.memory_info()
            return int(max(0, info.rss - info.shared))
    except psutil.Error:
        return 0


@dataclass
class Spare:
    """A template's child waiting, on ``channel``, for the listener of the next cold start."""

    pid: int
    channel: socket.socket
    cgroup: WorkerCgroup | None
    watch: ExitWatch

    def handed_over(self) -> None:
        """It has its listener: a worker from now on, watched as one (not by this object)."""
        self.channel.close()
        self.watch.forget()

    def discard(self, background: Background) -> None:
        """End it (SIGKILL; closing its channel alone would also do) and remove its cgroup once it
        has gone."""
        self.channel.close()
        with contextlib.suppress(ProcessLookupError):
            if not self.watch.exited():
                os.kill(self.pid, signal.SIGKILL)
        self.watch.forget()
        if self.cgroup is not None:
            background.run(remove_cgroup(self.cgroup))


@dataclass(frozen=True)
class TemplateForked:
    """A worker forked for a cold start by way of a template."""

    pid: int
    template: Template | None
    """None: the template could not be one (its load left threads) and is the worker itself."""
    cgroup: WorkerCgroup | None = None
    """The cgroup it is in already (the template's own when it is the worker, or the spare's)."""


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
        self.draining: list[Template] = []
        """Templates that fork nothing more, stopped once no worker of theirs runs."""
        self._starting: dict[str, asyncio.Future[Template | None]] = {}
        self._refused: dict[str, str] = {}
        """Launch key -> why its model cannot be a template (its load started threads)."""
        self._background = Background()

    @staticmethod
    def key(runtime: str, launch: WorkerLaunch, memory_mb: int) -> str:
        """What workers of one template share: everything of the launch but its listener (its
        sandbox, so the tenant's user, included: tenants never share one), and their memory size
        (a spare is limited to it before it is anyone's)."""
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
        if it cannot have one now and nothing was forked (the caller forks from the zygote).

        Raises WorkerStartError if a template may have forked a worker with these pipes but did
        not say so (they must not be used again)."""
        if not self.enabled or not wants_template(launch) or key in self._refused:
            return None
        deadline = time.monotonic() + timeout_s
        template = await self._usable(key, zygote, timeout_s)
        if template is not None:
            try:
                pid, cgroup = await template.fork(launch, status_fd, output_fd)
            except TemplateRefused as exc:
                log.info("template %d forked no worker (%s); forking from the zygote", template.pid, exc)
                self._retire(template)
                return None
            except OSError as exc:
                self._retire(template)
                raise WorkerStartError(f"The model's template did not fork its worker: {exc}") from None
            return TemplateForked(pid, template, cgroup)
        if key in self._starting or key in self._refused:
            return None  # one starts, and did not finish in time
        remaining = max(1.0, deadline - time.monotonic())
        return await self._start(key, zygote, launch, status_fd, output_fd, cgroups, memory_mb, remaining)

    async def _usable(self, key: str, zygote: Zygote, timeout_s: float) -> Template | None:
        template = self.ready.get(key)
        if template is not None and (not template.usable() or template.zygote is not zygote):
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
        limiting: asyncio.Future[WorkerCgroup | None] | None = None
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
            if cgroups is not None and memory_mb:
                limiting = asyncio.ensure_future(
                    cgroups.attach_off_loop(pid, memory_mb, background=launch.nice > 0)
                )
            loop = asyncio.get_running_loop()
            try:
                first = await asyncio.wait_for(loop.sock_recv(ours, 65536), timeout_s)
            except TimeoutError:
                raise WorkerStartError(f"The model did not become ready within {timeout_s:.0f} s.") from None
            cgroup = await asyncio.shield(limiting) if limiting is not None else None
            status = _template_status(first)
            if not status.ready:
                ours.close()
                if status.serving:
                    log.info(
                        "the model of %s cannot be a template (%s): its workers fork from the zygote",
                        launch.model_dir,
                        status.error,
                    )
                    self._refuse(key, status.error or "its load started threads")
                # Either way the process is the worker: serving, or it has written the loader's
                # error on the worker's status pipe (its cgroup tells whether memory ran out).
                return TemplateForked(pid, None, cgroup)
            try:
                reply = await asyncio.wait_for(loop.sock_recv(ours, 65536), timeout_s)
                child = _forked(reply, "the template")
            except (OSError, TimeoutError) as exc:
                raise WorkerStartError(f"The model's template did not fork its worker: {exc}") from None
            if not child_of(child, pid):
                raise WorkerStartError(f"The model's template reported process {child}, not a child of it.")
            template = Template(
                key,
                pid,
                ours,
                zygote,
                cgroup,
                self.clock,
                self._background,
                cgroups,
                memory_mb,
                launch.nice > 0,
            )
            template.starting.add(child)
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
                if limiting is not None:
                    self._background.run(_remove_when_moved(limiting))
            raise
        finally:
            del self._starting[key]
            starting.set_result(template)

    def _refuse(self, key: str, reason: str) -> None:
        self._refused[key] = reason
        while len(self._refused) > _MAX_REFUSED:
            del self._refused[next(iter(self._refused))]

    def maintain(self) -> None:
        """Stop templates idle for ``idle_s``, and the least recently used idle ones while the
        templates hold more than ``max_bytes``; those that cannot fork any more once their workers
        have gone."""
        now = self.clock()
        for template in list(self.ready.values()):
            if not template.usable() or template.zygote.exited():
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
        for template in list(self.draining):
            if template.exited() or not template.busy():
                self.draining.remove(template)
                self._background.run(template.stop())

    def unique_bytes(self) -> int:
        """The memory the templates hold (for the memory budget)."""
        return sum(t.unique_bytes() for t in [*self.ready.values(), *self.draining])

    def _retire(self, template: Template) -> None:
        """It forks nothing more; it is stopped now, or once no worker of it runs."""
        if self.ready.get(template.key) is template:
            del self.ready[template.key]
        template.broken = True
        if template.busy() and not template.exited():
            if template not in self.draining:
                self.draining.append(template)
        else:
            self._background.run(template.stop())

    async def close(self) -> None:
        for template in [*self.ready.values(), *self.draining]:
            self.ready.pop(template.key, None)
            self._background.run(template.stop())
        self.draining.clear()
        await self._background.join()


async def _remove_when_moved(move: asyncio.Future[WorkerCgroup | None]) -> None:
    """Remove the cgroup a move (still running, or done) put a process that was killed in."""
    with contextlib.suppress(Exception):
        cgroup = await asyncio.shield(move)
        if cgroup is not None:
            await remove_cgroup(cgroup)


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
        raise TemplateRefused(answer.error or f"{who} refused")
    return answer.pid
