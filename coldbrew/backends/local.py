"""The local backend: each execution environment is a worker process on this machine.

Workers listen on Unix sockets in a private run directory and report readiness (or the loader's
error) as one JSON line on a pipe, so the gateway never polls and never guesses why a start failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import psutil

from coldbrew.backends.base import WorkerSpec, WorkerStartError

log = logging.getLogger("coldbrew.backends")


class LocalWorker:
    def __init__(self, process: asyncio.subprocess.Process, socket_path: str, setup_ms: float) -> None:
        self.process = process
        self.pid = process.pid
        self.address = f"unix:{socket_path}"
        self.socket_path = socket_path
        self.setup_ms = setup_ms
        self._ps: psutil.Process | None = None

    def rss_bytes(self) -> int:
        """Resident memory of the worker and anything it started."""
        try:
            if self._ps is None:
                self._ps = psutil.Process(self.pid)
            total = self._ps.memory_info().rss
            for child in self._ps.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return int(total)
        except psutil.Error:
            return 0

    def is_alive(self) -> bool:
        return self.process.returncode is None

    async def stop(self, grace_s: float = 2.0) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace_s)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)


class LocalBackend:
    def __init__(self, startup_timeout_s: float = 120.0) -> None:
        # Short path: a Unix socket path must fit in 108 bytes.
        self.run_dir = Path(tempfile.mkdtemp(prefix="coldbrew-"))
        self.startup_timeout_s = startup_timeout_s
        self._ids = itertools.count()

    async def start(self, spec: WorkerSpec) -> LocalWorker:
        socket_path = str(self.run_dir / f"w{os.getpid()}-{next(self._ids)}.sock")
        read_fd, write_fd = os.pipe()
        started = time.perf_counter()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "coldbrew.worker",
                "--model-dir", spec.model_dir,
                "--socket", socket_path,
                "--status-fd", str(write_fd),
                "--max-concurrency", str(spec.max_concurrency),
                pass_fds=(write_fd,),
                env={**os.environ, **spec.env},
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            os.close(write_fd)
        try:
            status = await asyncio.wait_for(_read_status(read_fd), self.startup_timeout_s)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise WorkerStartError(
                f"The model did not become ready within {self.startup_timeout_s:.0f} s."
            ) from None
        finally:
            os.close(read_fd)
        if not status.get("ready"):
            await process.wait()
            error = status.get("error") or f"the worker exited with status {process.returncode} before it was ready"
            raise WorkerStartError(error)
        setup_ms = float(status.get("setup_ms", (time.perf_counter() - started) * 1000))
        log.debug("worker %d ready on %s in %.1f ms", process.pid, socket_path, setup_ms)
        return LocalWorker(process, socket_path, setup_ms)

    async def close(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)


async def _read_status(fd: int) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    data = b""
    # The pipe is read in a thread: it is one short line, and connect_read_pipe would take
    # ownership of the descriptor, which the caller closes.
    while not data.endswith(b"\n"):
        chunk = await loop.run_in_executor(None, os.read, fd, 65536)
        if not chunk:
            break
        data += chunk
    if not data.strip():
        return {"ready": False}
    try:
        status: dict[str, object] = json.loads(data.decode(errors="replace").splitlines()[0])
    except (json.JSONDecodeError, IndexError):
        return {"ready": False, "error": "the worker reported an unreadable status"}
    return status
