"""Micro-benchmark: the worker's share of an invocation over a persistent Unix-socket connection.

Run from the repository root: ``python tests/worker/bench_invocations.py``. It starts real
workers and prints median round trips of ``POST /invocations`` for

- an echo ``transform_fn`` and ones that busy-wait 100 and 500 µs: round trip minus that time is
  the overhead beyond predict;
- a small scikit-learn model through the default CSV pipeline, next to ``handler.invoke`` of the
  same model in this process;

each through a persistent httpx client (what a Python gateway would use) and through a raw
keep-alive socket (the worker's own cost plus the kernel's, without client overhead).

Read the overhead off the busy-wait rows. A real model's predict is itself slower when requests
arrive one by one than in a tight loop (caches go cold while the process waits): scikit-learn's
``handler.invoke`` here takes ~90 µs back to back but ~225 µs with 1 ms idle gaps, which is why
the scikit-learn row exceeds in-process time plus overhead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
N = 3000

SPIN = """
import time

def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    end = time.perf_counter() + {seconds}
    while time.perf_counter() < end:
        pass
    return body, "text/csv"
"""


def start(model_dir: Path, sock: Path) -> subprocess.Popen[bytes]:
    read, write = os.pipe()
    command = [sys.executable, "-m", "coldbrew.worker", "--model-dir", str(model_dir), "--socket", str(sock)]
    proc = subprocess.Popen(
        [*command, "--status-fd", str(write)], pass_fds=(write,), cwd=ROOT, stderr=subprocess.DEVNULL
    )
    os.close(write)
    with os.fdopen(read) as status:
        line = json.loads(status.readline())
    assert line["ready"], line
    return proc


def median_us(call: Callable[[], object], n: int = N) -> float:
    for _ in range(200):
        call()
    samples = []
    for _ in range(n):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000


def raw_client(sock: Path, request: bytes) -> Callable[[], object]:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(sock))
    reader = conn.makefile("rb")

    def call() -> bytes:
        conn.sendall(request)
        length = 0
        while (line := reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return reader.read(length)

    return call


def measure(label: str, sock: Path, row: bytes) -> None:
    headers = {"content-type": "text/csv", "accept": "text/csv"}
    request = (
        b"POST /invocations HTTP/1.1\r\nhost: worker\r\ncontent-type: text/csv\r\naccept: text/csv\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(row), row)
    )
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://worker") as client:
        via_httpx = median_us(lambda: client.post("/invocations", content=row, headers=headers))
    via_socket = median_us(raw_client(sock, request))
    print(f"{label:24s} httpx {via_httpx:7.1f} µs   raw socket {via_socket:7.1f} µs")


def main() -> None:
    import joblib
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    tmp = Path(tempfile.mkdtemp(prefix="cb-bench-"))
    X, y = load_diabetes(return_X_y=True)
    row = ",".join(repr(float(v)) for v in X[0]).encode()
    procs = []
    try:
        for micros in (0, 100, 500):
            model_dir = tmp / f"spin{micros}"
            (model_dir / "code").mkdir(parents=True)
            (model_dir / "code" / "inference.py").write_text(SPIN.format(seconds=micros / 1e6))
            procs.append(start(model_dir, tmp / f"spin{micros}.sock"))
            measure(f"transform_fn {micros} µs", tmp / f"spin{micros}.sock", row)

        sk = tmp / "sk"
        sk.mkdir()
        joblib.dump(Ridge().fit(X, y), sk / "model.joblib")
        procs.append(start(sk, tmp / "sk.sock"))
        measure("sklearn Ridge, CSV", tmp / "sk.sock", row)

        sys.path.insert(0, str(ROOT))
        from coldbrew.worker.context import Context
        from coldbrew.worker.handlers import load_handler

        handler = load_handler(str(sk))
        context = Context(str(sk))
        in_process = median_us(lambda: handler.invoke(row, "text/csv", "text/csv", context))
        print(f"{'  same, in-process':24s} handler.invoke {in_process:.1f} µs")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
