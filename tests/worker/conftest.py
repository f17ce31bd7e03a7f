"""Helpers for worker tests: small trained models and real worker processes."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    status: dict[str, Any] | None
    socket_path: Path | None
    _clients: list[httpx.Client] = field(default_factory=list)

    def client(self) -> httpx.Client:
        """A persistent client over the worker's socket (closed when the worker is stopped)."""
        assert self.socket_path is not None
        client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket_path)), base_url="http://worker", timeout=10
        )
        self._clients.append(client)
        return client

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def read_status(fd: int, timeout: float = START_TIMEOUT_S) -> dict[str, Any] | None:
    """The worker's status line, or None if it closed the pipe without one."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(remaining, 0))
        if not ready:
            raise TimeoutError(f"no status line within {timeout} s")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return json.loads(data) if data else None


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def socket_dir() -> Iterator[Path]:
    # Short on purpose: pytest's tmp_path can exceed the 107-byte limit of a socket path.
    path = Path(tempfile.mkdtemp(prefix="cbw-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


_counter = iter(range(10**6))


def start_worker(
    model_dir: Path,
    socket_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    tcp: bool = False,
) -> Worker:
    """Start ``python -m coldbrew.worker`` and wait for its status line."""
    read, write = os.pipe()
    socket_path = None if tcp else socket_dir / f"w{next(_counter)}.sock"
    where = ["--port", "0"] if tcp else ["--socket", str(socket_path)]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coldbrew.worker",
            "--model-dir",
            str(model_dir),
            *where,
            "--status-fd",
            str(write),
            *args,
        ],
        pass_fds=(write,),
        cwd=ROOT,
        env=worker_env(env),
    )
    os.close(write)
    try:
        status = read_status(read)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(read)
    return Worker(proc, status, socket_path)


@pytest.fixture
def workers(socket_dir: Path) -> Iterator[list[Worker]]:
    """Workers started by a test; stopped after it whatever happens."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def write_code(model_dir: Path, source: str, name: str = "inference.py") -> None:
    code = model_dir / "code"
    code.mkdir(parents=True, exist_ok=True)
    (code / name).write_text(textwrap.dedent(source))
