"""What the relay of an ``exec:`` server costs (issue 14, point 2).

An ``exec:`` server runs in a network namespace of its own and the gateway reaches it through a
relay (``coldbrew.backends.relay``); ``COLDBREW_EXEC_NETWORK=host`` serves the same server on the
host's loopback, reached directly, which is the path every ``exec:`` server took before. Both run
side by side in one real ``coldbrew serve``; warm invocations go in blocks that alternate between
them, so machine noise falls on both alike (alternating each request would change what is
measured: TCP delays an ACK only on a connection that answers at once, as a busy one does). Two
servers: the standard library's ``http.server``, which writes a response's head and body in two
writes (where Nagle's algorithm and a delayed ACK cost ~40 ms when nothing else gets in), and the
same server writing each response at once, as uvicorn or gunicorn do. Cold starts (the relay is
one more interpreter to start) are measured after each endpoint has scaled to zero. Prints one
JSON document: medians with p99 beside them.

    python bench/exec_server.py [--warm 2000] [--cold 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import ColdbrewServer, tar_gz, wait_for_status  # noqa: E402

# A keep-alive server of the standard library, as a user might bring one.
SERVER = textwrap.dedent("""
    import os
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = int(os.environ.get("WBUFSIZE", "0"))

        def _send(self, status, body):
            self.send_response(status)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(200 if self.path == "/ping" else 404, b"")

        def do_POST(self):
            data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._send(200, str(sum(float(x) for x in data.split(b","))).encode())

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler).serve_forever()
""")

MODES = {"relay": {}, "host": {"COLDBREW_EXEC_NETWORK": "host"}}
SERVERS = {"http.server": {}, "one-write": {"WBUFSIZE": "65536"}}
BLOCK = 100


def stats_ms(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "n": len(ms),
    }


def deploy(sm: Any, name: str, archive: Path, environment: dict[str, str]) -> None:
    sm.create_model(
        ModelName=name,
        PrimaryContainer={
            "Image": f"exec:{sys.executable} serve.py",
            "ModelDataUrl": archive.as_uri(),
            "Environment": environment,
        },
        ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew",
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


def invoke(client: httpx.Client, name: str) -> float:
    started = time.perf_counter()
    response = client.post(
        f"/endpoints/{name}/invocations", content=b"1,2,3.5", headers={"Content-Type": "text/csv"}
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 200 and response.content == b"6.5", response.text
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=2000, help="warm invocations per endpoint")
    parser.add_argument("--cold", type=int, default=10, help="cold starts per endpoint")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="coldbrew-bench-exec-") as tmp:
        root = Path(tmp)
        archive = root / "byo.tar.gz"
        archive.write_bytes(tar_gz({"serve.py": SERVER.encode()}))
        # Workers of their own users when this runs as root, as a default server has them.
        server = ColdbrewServer(root / "data", env={"COLDBREW_WORKER_IDS": "auto"}).start()
        try:
            sm = server.client("sagemaker")
            warm_names = {
                f"{kind}/{mode}": f"warm-{i}-{mode}" for i, kind in enumerate(SERVERS) for mode in MODES
            }
            for i, server_env in enumerate(SERVERS.values()):
                for mode, environment in MODES.items():
                    env = {**server_env, **environment, "COLDBREW_IDLE_TIMEOUT_S": "600"}
                    deploy(sm, f"warm-{i}-{mode}", archive, env)
            for mode, environment in MODES.items():
                deploy(sm, f"cold-{mode}", archive, {**environment, "COLDBREW_IDLE_TIMEOUT_S": "0.2"})
            for name in [*warm_names.values(), *(f"cold-{mode}" for mode in MODES)]:
                wait_for_status(sm, name, "InService", timeout=120)
            warm: dict[str, list[float]] = {label: [] for label in warm_names}
            cold: dict[str, list[float]] = {mode: [] for mode in MODES}
            with httpx.Client(base_url=server.url, timeout=60) as client:
                for name in warm_names.values():
                    for _ in range(20):  # connections, caches and the environment up
                        invoke(client, name)
                for _ in range(max(1, args.warm // BLOCK)):
                    for label, name in warm_names.items():
                        warm[label] += [invoke(client, name) for _ in range(BLOCK)]
                for _ in range(args.cold):
                    time.sleep(1.5)  # past the idle timeout: both scale to zero
                    for mode in MODES:
                        cold[mode].append(invoke(client, f"cold-{mode}"))
        finally:
            server.stop()
    result = {
        "warm_invoke": {label: stats_ms(samples) for label, samples in warm.items()},
        "cold_invoke": {mode: stats_ms(samples) for mode, samples in cold.items()},
        "note": "relay: the exec: server in a network namespace of its own, through its relay (the "
        "default); host: COLDBREW_EXEC_NETWORK=host, the server on the host's loopback, as before",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
