"""Starting one coldbrew worker on this machine: fork it from its runtime's zygote (or start a fresh
interpreter), limit its memory from the start, and wait for its readiness on the status pipe.

Shared by the local backend (:mod:`~coldbrew.backends.local`) and the Ray backend's node agent
(:mod:`~coldbrew.backends.ray.agent`): the two differ in how the worker is prepared (containment,
the node's copy of the model) and reached (a Unix socket, TCP on the node's address), not in how it
is launched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping

from coldbrew.backends.base import WorkerStartError
from coldbrew.backends.cgroups import MemoryCgroups
from coldbrew.backends.fresh import spawn_worker
from coldbrew.backends.processes import ForkedWorker, SpawnedWorker, kill
from coldbrew.backends.start_trace import StartTrace
from coldbrew.backends.status import read_status
from coldbrew.backends.templates import TemplateChild, TemplateForked, Templates
from coldbrew.backends.zygotes import Zygote, ZygoteChild, Zygotes
from coldbrew.worker.messages import WorkerLaunch, WorkerStatus

log = logging.getLogger("coldbrew.backends")

ZYGOTE_PATIENCE_S = 30.0
"""How long a start waits for its runtime's zygote to finish starting before it starts a fresh
interpreter instead (a zygote whose imports take longer than this is rare: PyTorch takes ~3 s)."""


async def launch_worker(
    launch: WorkerLaunch,
    *,
    zygotes: Zygotes,
    runtime: str,
    fresh: bool,
    base_env: Mapping[str, str],
    cgroups: MemoryCgroups | None,
    memory_mb: int,
    startup_timeout_s: float,
    socket_path: str,
    output_fd: int | None = None,
    templates: Templates | None = None,
) -> tuple[SpawnedWorker | ForkedWorker, WorkerStatus]:
    """The worker of ``launch``, once it reported ready, and its status report.

    Raises WorkerStartError with the loader's error (paths as the worker saw them: the caller
    rewrites them to the user's names) if it did not become ready; nothing of it is left then
    (a model template it may have started stays, for the model's next start).
    With ``templates``, a worker forked from the zygote is forked from its model's template
    (:mod:`~coldbrew.backends.templates`) when it can be.
    ``socket_path`` is what the worker object removes on stop (a worker on TCP never creates it).
    """
    zygote = None if fresh else await zygotes.wait_ready(runtime, ZYGOTE_PATIENCE_S)
    requested = time.monotonic()
    read_fd, write_fd = os.pipe()
    process: asyncio.subprocess.Process | None = None
    pid = 0
    forked: TemplateForked | None = None
    try:
        if zygote is not None and templates is not None:
            key = Templates.key(runtime, launch, memory_mb)
            forked = await templates.fork(
                key,
                zygote,
                launch,
                write_fd,
                output_fd,
                cgroups=cgroups,
                memory_mb=memory_mb,
                timeout_s=startup_timeout_s,
            )
            if forked is not None:
                pid = forked.pid
        if zygote is not None and forked is None:
            try:
                pid = await zygote.fork(launch, write_fd, output_fd)
            except OSError as exc:
                log.warning("the zygote could not fork a worker (%s); starting a fresh one", exc)
                zygote = None
        if zygote is None:
            process = await spawn_worker(launch, write_fd, base_env, output_fd)
            pid = process.pid
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    launched = time.monotonic()
    template = forked.template if forked is not None else None
    try:
        return await _ready(
            launch, process, pid, zygote, forked, read_fd, cgroups, memory_mb, startup_timeout_s, socket_path,
            requested, launched,
        )  # fmt: skip
    except BaseException:
        if template is not None:
            template.adopt(pid, None)  # its start is over: it did not start
        raise


async def _ready(
    launch: WorkerLaunch,
    process: asyncio.subprocess.Process | None,
    pid: int,
    zygote: Zygote | None,
    forked: TemplateForked | None,
    read_fd: int,
    cgroups: MemoryCgroups | None,
    memory_mb: int,
    startup_timeout_s: float,
    socket_path: str,
    requested: float,
    launched: float,
) -> tuple[SpawnedWorker | ForkedWorker, WorkerStatus]:
    """The launched worker ``pid`` once in its cgroup and ready (``read_fd`` is its status pipe,
    closed here)."""
    template = forked.template if forked is not None else None
    # Limited as soon as it is running, so that the model load counts against MemorySizeInMB. Not
    # before: the child runs meanwhile (the move takes milliseconds; pages it touches before are
    # charged where it was). The move runs off the event loop (``attach_off_loop``).
    try:
        if forked is not None and (forked.template is None or forked.cgroup is not None):
            # In its cgroup already: a template that is the worker itself, or a template's spare.
            cgroup = forked.cgroup
        elif cgroups is not None and memory_mb:
            cgroup = await cgroups.attach_off_loop(pid, memory_mb, background=launch.nice > 0)
        else:
            cgroup = None
    except BaseException:
        # Cancelled: nobody reads its status now, so the worker stops at its report (EPIPE).
        os.close(read_fd)
        raise
    limited = time.monotonic()
    try:
        status = await asyncio.wait_for(read_status(read_fd), startup_timeout_s)
    except TimeoutError:
        await kill(process, pid)
        if cgroup is not None:
            cgroup.remove()
        raise WorkerStartError(f"The model did not become ready within {startup_timeout_s:.0f} s.") from None
    finally:
        os.close(read_fd)
    if not status.ready:
        if process is not None:
            await process.wait()
        error = status.error or "the worker exited before it was ready"
        if cgroup is not None and cgroup.oom_killed():
            error = f"Loading the model needs more than its memory size of {memory_mb} MB."
        if cgroup is not None:
            cgroup.remove()
        raise WorkerStartError(error)
    reported = time.monotonic()
    setup_ms = status.setup_ms or 0.0
    worker: SpawnedWorker | ForkedWorker
    if process is not None:
        worker = SpawnedWorker(process, socket_path, setup_ms)
    elif template is not None:
        worker = TemplateChild(pid, socket_path, setup_ms, template)
        template.adopt(pid, worker)
    else:
        assert zygote is not None
        worker = ZygoteChild(pid, socket_path, setup_ms, zygote)
    worker.cgroup = cgroup
    worker.start_trace = StartTrace(requested, launched, limited, reported, status.stages)
    return worker, status
