"""The ``coldbrew`` command as a user runs it: one readable line for what they got wrong."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import free_port


def coldbrew(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coldbrew", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_busy_port_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = coldbrew("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"coldbrew: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "stop what uses it or pick another port with --port (COLDBREW_PORT)"
    ]
    assert not (tmp_path / "data").exists()  # nothing was started or created


def test_bad_setting_is_one_readable_line(tmp_path: Path) -> None:
    result = coldbrew("serve", "--data-dir", str(tmp_path / "data"), env={"COLDBREW_IDLE_TIMEOUT_S": "-1"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "coldbrew: invalid setting COLDBREW_IDLE_TIMEOUT_S='-1': Input should be greater than 0"
    )


def test_ctrl_c_exits_quietly(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coldbrew",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    # The conventional status after SIGINT, once the server has shut down in order.
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert "Application shutdown complete" in stderr
