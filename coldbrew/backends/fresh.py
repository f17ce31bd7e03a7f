"""Workers started as fresh interpreters: the way when no zygote of the model's runtime runs
(it is turned off, still starting, failed to start, or died)."""

from __future__ import annotations

import asyncio
import sys

from coldbrew.backends.base import WorkerSpec
from coldbrew.backends.processes import child_env


async def spawn_worker(spec: WorkerSpec, socket_path: str, status_fd: int) -> asyncio.subprocess.Process:
    """``python -m coldbrew.worker`` for ``spec``, reporting on the inherited ``status_fd``."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coldbrew.worker",
        "--model-dir",
        spec.model_dir,
        "--socket",
        socket_path,
        "--status-fd",
        str(status_fd),
        "--max-concurrency",
        str(spec.environment_concurrency),
        pass_fds=(status_fd,),
        env=child_env(spec.env),
        stdin=asyncio.subprocess.DEVNULL,
    )
