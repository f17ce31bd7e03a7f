"""Workers started as fresh interpreters: the way when no zygote of the model's runtime runs
(it is turned off, still starting, failed to start, or died)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Mapping

from coldbrew.backends.processes import child_env
from coldbrew.worker.messages import WorkerLaunch


async def spawn_worker(
    launch: WorkerLaunch, status_fd: int, base_env: Mapping[str, str], output_fd: int | None = None
) -> asyncio.subprocess.Process:
    """``python -m coldbrew.worker`` for ``launch``, reporting on the inherited ``status_fd``, its
    stdout and stderr on ``output_fd`` if given (else the gateway's).

    The launch goes to its stdin, as to a zygote over its socket. Its environment is also the
    process's own from the start: thread counts and PYTHONPATH must be set before the
    interpreter and the numerical libraries start. ``base_env`` is the allow-listed part of the
    gateway's environment; the worker contains itself (``launch.sandbox``) before the model loads.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coldbrew.worker",
        "--launch",
        "--status-fd",
        str(status_fd),
        pass_fds=(status_fd,),
        env=child_env(launch.env, base_env),
        stdin=asyncio.subprocess.PIPE,
        stdout=output_fd,
        stderr=output_fd,
    )
    assert process.stdin is not None
    process.stdin.write(launch.encoded())
    # A worker that died before reading it reports that on its status pipe (by closing it).
    with contextlib.suppress(ConnectionError):
        await process.stdin.drain()
    process.stdin.close()
    return process
