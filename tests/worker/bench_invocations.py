"""Micro-benchmark: the worker's share of an invocation over a persistent UDS connection.

Run ``python tests/worker/bench_invocations.py`` from the repository root. It starts real
workers and reports median round trips for:

- ``/ping`` and an echo ``transform_fn`` (no model): the worker + HTTP cost of an invocation;
- a small scikit-learn model through the default CSV pipeline, against ``handler.invoke`` of
  the same model in-process, whose difference is the overhead beyond predict;

each with a persistent httpx client and with a raw keep-alive socket (which shows how much of
the round trip is httpx itself rather than the worker).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
N = 5000


def start(model_dir: Path, sock: Path) -> subprocess.Popen[bytes]:
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "coldbrew.worker", "--model-dir", str(model_dir), "--socket", str(sock),
         "--status-fd", str(write)],
        pass_fds=(write,), cwd=ROOT, stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as status:
        line = json.loads(status.readline())
    assert line["ready"], line
    return proc


def median_us(fn: object, n: int = N) -> float:
    call = fn  # type: ignore[assignment]
    for _ in range(200):
        call()  # type: ignore[operator]
    samples = []
    for _ in range(n):
        t = time.perf_counter_ns()
        call()  # type: ignore[operator]
        samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1000


def raw_client(sock: Path, request: bytes) -> object:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(sock))

    def call() -> None:
        conn.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(body) < length:
            body += conn.recv(65536)

    return call


def main() -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    import joblib

    tmp = Path(tempfile.mkdtemp(prefix="cb-bench-"))
    echo = tmp / "echo"
    (echo / "code").mkdir(parents=True)
    (echo / "code" / "inference.py").write_text(
        "def model_fn(model_dir):\n    return None\n\n"
        "def transform_fn(model, body, content_type, accept):\n    return body, 'text/csv'\n"
    )
    X, y = load_diabetes(return_X_y=True)
    sk = tmp / "sk"
    sk.mkdir()
    joblib.dump(Ridge().fit(X, y), sk / "model.joblib")
    row = ",".join(repr(float(v)) for v in X[0]).encode()

    procs = [start(echo, tmp / "echo.sock"), start(sk, tmp / "sk.sock")]
    try:
        for label, path in (("echo", tmp / "echo.sock"), ("sklearn", tmp / "sk.sock")):
            client = httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://worker")
            headers = {"content-type": "text/csv", "accept": "text/csv"}
            ping = median_us(lambda: client.get("/ping"))
            inv = median_us(lambda: client.post("/invocations", content=row, headers=headers))
            req = (b"POST /invocations HTTP/1.1\r\nhost: worker\r\ncontent-type: text/csv\r\naccept: text/csv\r\n"
                   b"content-length: %d\r\n\r\n%s" % (len(row), row))
            raw = median_us(raw_client(path, req))
            print(f"{label:8s} httpx /ping {ping:6.1f} us   httpx /invocations {inv:6.1f} us   raw socket /invocations {raw:6.1f} us")
            client.close()

        sys.path.insert(0, str(ROOT))
        from coldbrew.worker.context import Context
        from coldbrew.worker.handlers import load_handler

        handler = load_handler(str(sk))
        ctx = Context(str(sk))
        inproc = median_us(lambda: handler.invoke(row, "text/csv", "text/csv", ctx))
        predict = median_us(lambda: handler.model.predict(X[:1]))
        print(f"sklearn in-process: handler.invoke {inproc:.1f} us (of which model.predict {predict:.1f} us)")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
