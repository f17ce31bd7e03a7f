"""A user's own server (``exec:`` images) as an execution environment.

It must answer ``GET /ping`` and ``POST /invocations`` on ``SAGEMAKER_BIND_TO_PORT``, as a
SageMaker container does; it starts in the model directory. Unlike coldbrew's workers it reports
nothing on a pipe, so it is ready once ``/ping`` answers 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import socket
import time

from coldbrew.backends.base import WorkerSpec, WorkerStartError
from coldbrew.backends.cgroups import MemoryCgroups
from coldbrew.backends.processes import SpawnedWorker, child_env, kill
from coldbrew.backends.worker_client import WorkerClient, WorkerConnectionError

# Bounds of the wait between pings of a starting server.
_PING_MIN_S = 0.005
_PING_MAX_S = 0.25


async def start_user_server(
    spec: WorkerSpec, command: str, cgroups: MemoryCgroups | None, startup_timeout_s: float
) -> SpawnedWorker:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise WorkerStartError(f"The serve command {command!r} cannot be parsed: {exc}.") from None
    if not argv:
        raise WorkerStartError("The serve command is empty: use Image 'exec:COMMAND ARGS'.")
    port = _free_port()
    env = child_env(spec.env)
    env.update(
        SAGEMAKER_BIND_TO_PORT=str(port), SM_MODEL_DIR=spec.model_dir, COLDBREW_MODEL_DIR=spec.model_dir
    )
    if spec.output_fd is not None:
        # Its output goes to a pipe, where Python would hold print()s back in a block buffer; as in
        # SageMaker's framework containers (PYTHONUNBUFFERED=TRUE), each line is logged as it comes.
        env.setdefault("PYTHONUNBUFFERED", "1")
    started = time.perf_counter()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=spec.model_dir or None,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=spec.output_fd,
            stderr=spec.output_fd,
        )
    except OSError as exc:
        raise WorkerStartError(
            f"The serve command {argv[0]!r} could not be started: {exc.strerror or exc}."
        ) from None
    if spec.nice:
        # Right after the exec: threads the server starts later inherit it (the main thread's
        # first instants at niceness 0 do not matter; preexec_fn would not be safe in a threaded
        # gateway).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, process.pid, spec.nice)
    cgroup = cgroups.attach(process.pid, spec.memory_mb) if cgroups is not None and spec.memory_mb else None
    address = f"http://127.0.0.1:{port}"
    client = WorkerClient(address)
    answers = asyncio.ensure_future(_answers_ping(client, started))
    exited = asyncio.ensure_future(process.wait())
    try:
        # Whichever comes first: a server that dies while loading is reported at once, not after
        # the next ping.
        await asyncio.wait((answers, exited), timeout=startup_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            raise WorkerStartError(
                f"The serve command exited with status {process.returncode} before answering /ping "
                f"on port {port}."
            )
        if not answers.done():
            raise WorkerStartError(
                f"The serve command did not answer GET /ping with 200 on port {port} within "
                f"{startup_timeout_s:.0f} s."
            )
        answers.result()
    except WorkerStartError:
        await kill(process, process.pid)
        if cgroup is not None:
            cgroup.remove()
        raise
    finally:
        for task in (answers, exited):
            task.cancel()
        await client.aclose()
    worker = SpawnedWorker(process, None, (time.perf_counter() - started) * 1000, address=address)
    worker.cgroup = cgroup
    worker.counts_children = True
    return worker


async def _answers_ping(client: WorkerClient, started: float) -> None:
    """Returns once the server answers ``GET /ping`` with 200.

    A server tells nobody when it starts listening, so this asks. It asks often at first, when a
    small server is about to be up, then less: each wait is a tenth of the time it has taken so
    far, which keeps the delay this adds to a start to about 10 % however long the model loads.
    """
    while True:
        with contextlib.suppress(WorkerConnectionError, OSError):
            if (await client.request("GET", "/ping", {})).status == 200:
                return
        elapsed = time.perf_counter() - started
        await asyncio.sleep(min(max(elapsed / 10, _PING_MIN_S), _PING_MAX_S))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
