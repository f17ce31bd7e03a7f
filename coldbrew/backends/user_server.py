"""A user's own server (``exec:`` images) as an execution environment.

It must answer ``GET /ping`` and ``POST /invocations`` on ``SAGEMAKER_BIND_TO_PORT``, as a
SageMaker container does, on the loopback address (``127.0.0.1``, also in
``COLDBREW_BIND_TO_HOST``): one that listens on another address, where other machines could
reach it without the gateway, is stopped and reported. It starts in the model directory. Unlike
coldbrew's workers it reports nothing on a pipe, so it is ready once ``/ping`` answers 200.

It is contained as coldbrew's workers are (:mod:`coldbrew.backends.containment`) and never
outlives the gateway: it leads a process group of its own, which ``stop`` signals whole, and the
kernel SIGKILLs it when the gateway dies, SIGKILL included (``PR_SET_PDEATHSIG``). What it starts
itself is in its process group; a child that leaves the group, or outlives a killed server, is
beyond coldbrew's reach (a memory cgroup per worker, where the host allows one, still holds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
import shlex
import signal
import socket
import subprocess
import time

import psutil

from coldbrew.backends.base import WorkerSpec, WorkerStartError
from coldbrew.backends.cgroups import MemoryCgroups
from coldbrew.backends.containment import ContainedWorker, Containment
from coldbrew.backends.processes import SpawnedWorker, child_env, kill
from coldbrew.backends.worker_client import WorkerClient, WorkerConnectionError
from coldbrew.worker.messages import Sandbox
from coldbrew.worker.sandbox import die_with_parent
from coldbrew.worker.sandbox import enter as enter_sandbox

LOOPBACK = "127.0.0.1"

# Bounds of the wait between pings of a starting server.
_PING_MIN_S = 0.005
_PING_MAX_S = 0.25


async def start_user_server(
    spec: WorkerSpec,
    command: str,
    cgroups: MemoryCgroups | None,
    startup_timeout_s: float,
    containment: Containment,
    contained: ContainedWorker,
) -> SpawnedWorker:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise WorkerStartError(f"The serve command {command!r} cannot be parsed: {exc}.") from None
    if not argv:
        raise WorkerStartError("The serve command is empty: use Image 'exec:COMMAND ARGS'.")
    if spec.network_isolation:
        raise WorkerStartError(
            "EnableNetworkIsolation is not supported with a serve command of your own (exec: images) "
            "yet: coldbrew reaches such a server on a loopback TCP port, which a network namespace of "
            "its own would cut off. Use coldbrew's worker (code/inference.py), or turn it off."
        )
    port = _free_port()
    env = child_env(contained.env, containment.base_env)
    env.update(
        SAGEMAKER_BIND_TO_PORT=str(port),
        COLDBREW_BIND_TO_HOST=LOOPBACK,
        SM_MODEL_DIR=contained.model_dir,
        COLDBREW_MODEL_DIR=contained.model_dir,
    )
    if spec.output_fd is not None:
        # Its output goes to a pipe, where Python would hold print()s back in a block buffer; as in
        # SageMaker's framework containers (PYTHONUNBUFFERED=TRUE), each line is logged as it comes.
        env.setdefault("PYTHONUNBUFFERED", "1")
    # Why containing the child failed, written by it between fork and exec (close-on-exec, so
    # the server never holds it).
    error_read, error_write = os.pipe()
    started = time.perf_counter()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=spec.output_fd,
            stderr=spec.output_fd,
            preexec_fn=functools.partial(
                _contain_child, contained.sandbox, contained.model_dir or None, os.getpid(), error_write
            ),
        )
    except subprocess.SubprocessError:
        os.close(error_write)
        reason = _read_all(error_read) or "it could not be contained"
        raise WorkerStartError(f"The serve command {argv[0]!r} could not be started: {reason}.") from None
    except OSError as exc:
        raise WorkerStartError(
            f"The serve command {argv[0]!r} could not be started: {exc.strerror or exc}."
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.close(error_write)
        with contextlib.suppress(OSError):
            os.close(error_read)
    if spec.nice:
        # Right after the exec: threads the server starts later inherit it (the main thread's
        # first instants at niceness 0 do not matter; preexec_fn would not be safe in a threaded
        # gateway).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, process.pid, spec.nice)
    cgroup = (
        cgroups.attach(process.pid, spec.memory_mb, background=spec.nice > 0)
        if cgroups is not None and spec.memory_mb
        else None
    )
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
        _check_loopback(process.pid, port)
    except WorkerStartError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
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
    worker.process_group = True
    return worker


def _contain_child(sandbox: Sandbox, cwd: str | None, gateway: int, error_fd: int) -> None:
    """Between fork and exec, in the server's process: contain it, then have it die with the
    gateway (after the switch of user, which clears the parent-death signal).

    A preexec_fn in a threaded gateway is safe only if it takes no lock another thread may have
    held at fork: this makes system calls through os and ctypes functions resolved at import,
    and imports nothing.
    """
    try:
        # Its own process group (uvloop's subprocesses take no process_group argument).
        os.setpgid(0, 0)
        enter_sandbox(sandbox)
        if cwd:
            os.chdir(cwd)  # after the mounts: the model directory as the server sees it
        die_with_parent(signal.SIGKILL, gateway)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(error_fd, str(exc).encode()[:1000])
        raise


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").strip()


def _check_loopback(pid: int, port: int) -> None:
    """Refuse a server that listens on ``port`` on an address other machines can reach."""
    try:
        server = psutil.Process(pid)
        processes = [server, *server.children(recursive=True)]
    except psutil.Error:
        return
    for process in processes:
        try:
            listening = [c for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
        for conn in listening:
            if conn.laddr and conn.laddr.port == port and not ipaddress.ip_address(conn.laddr.ip).is_loopback:
                raise WorkerStartError(
                    f"The serve command listens on {conn.laddr.ip or '*'}:{port}, where other machines "
                    f"can reach it without coldbrew: bind it to {LOOPBACK} (COLDBREW_BIND_TO_HOST)."
                )


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
