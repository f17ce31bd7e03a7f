"""Serving benchmark (issue 3): warm and cold invoke latency, throughput, and idle-endpoint memory.

Runs a real ``coldbrew serve`` on a loopback port and prints one JSON document. The baseline is
the same model's in-process ``predict`` on the same row, measured in the same run.

    python bench/serving.py [--warm-requests 2000] [--cold-trials 20] [--concurrency-seconds 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import (  # noqa: E402
    ColdbrewServer,
    deploy_serverless,
    sklearn_archive,
    wait_for_status,
    worker_pids,
)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {"p50_ms": round(statistics.median(ms), 3), "p99_ms": round(percentile(ms, 99), 3), "n": len(ms)}


def worker_count(server: ColdbrewServer) -> int:
    return len(worker_pids(server))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warm-requests", type=int, default=2000)
    parser.add_argument("--cold-trials", type=int, default=20)
    parser.add_argument("--concurrency-seconds", type=float, default=15.0)
    parser.add_argument("--idle-endpoints", type=int, default=100)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-bench-"))
    archive, model = sklearn_archive(tmp / "model.tar.gz", n_estimators=50)
    row = load_row()
    body = ",".join(repr(float(v)) for v in row)

    in_process = []
    for _ in range(2000):
        started = time.perf_counter()
        model.predict(row.reshape(1, -1))
        in_process.append(time.perf_counter() - started)

    server = ColdbrewServer(tmp / "data").start()
    results: dict[str, Any] = {
        "model": "RandomForestRegressor(n_estimators=50) on load_diabetes, one-row CSV"
    }
    try:
        sm = server.client()
        deploy_serverless(sm, "bench", archive.as_uri(), max_concurrency=8)
        wait_for_status(sm, "bench", "InService")
        url = f"{server.url}/endpoints/bench/invocations"
        headers = {"Content-Type": "text/csv"}
        with httpx.Client() as client:
            for _ in range(50):
                client.post(url, content=body, headers=headers).raise_for_status()
            warm = []
            for _ in range(args.warm_requests):
                started = time.perf_counter()
                client.post(url, content=body, headers=headers).raise_for_status()
                warm.append(time.perf_counter() - started)

        runtime = server.client("sagemaker-runtime")
        boto_warm = []
        for _ in range(min(500, args.warm_requests)):
            started = time.perf_counter()
            runtime.invoke_endpoint(EndpointName="bench", Body=body, ContentType="text/csv")["Body"].read()
            boto_warm.append(time.perf_counter() - started)

        results["in_process_predict"] = summary_ms(in_process)
        results["warm_invoke_http"] = summary_ms(warm)
        results["warm_invoke_boto3"] = summary_ms(boto_warm)
        results["warm_overhead_p50_ms"] = round(
            results["warm_invoke_http"]["p50_ms"] - results["in_process_predict"]["p50_ms"], 3
        )
        results["concurrent_8"] = concurrent(url, body, headers, args.concurrency_seconds)
        results["cold_start"] = cold_starts(server, sm, archive, body, args.cold_trials)
    finally:
        server.stop()
    # A server of its own, so the workers of the endpoints above do not count.
    server = ColdbrewServer(tmp / "idle-data").start()
    try:
        results["idle_endpoints"] = idle_endpoints(server, server.client(), archive, args.idle_endpoints)
    finally:
        server.stop()
    print(json.dumps(results, indent=2))


def load_row() -> np.ndarray:
    from sklearn.datasets import load_diabetes

    return load_diabetes(return_X_y=True)[0][0]


def concurrent(url: str, body: str, headers: dict[str, str], seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client_loop() -> None:
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < stop:
                started = time.perf_counter()
                response = client.post(url, content=body, headers=headers)
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        key = f"{response.status_code} {response.headers.get('x-amzn-errortype')}"
                        errors[key] = errors.get(key, 0) + 1

    threads = [threading.Thread(target=client_loop) for _ in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "clients": 8,
        "seconds": round(elapsed, 1),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "errors": errors,
        **summary_ms(latencies),
    }


def cold_starts(server: ColdbrewServer, sm: Any, archive: Path, body: str, trials: int) -> dict[str, Any]:
    # Counted before the deploy: the worker that passes the load check stays warm until released.
    baseline_workers = worker_count(server)
    deploy_serverless(sm, "cold", archive.as_uri(), environment={"COLDBREW_IDLE_TIMEOUT_S": "0.3"})
    wait_for_status(sm, "cold", "InService")
    url = f"{server.url}/endpoints/cold/invocations"
    samples = []
    with httpx.Client(timeout=60) as client:
        for _ in range(trials):
            deadline = time.monotonic() + 30
            while worker_count(server) > baseline_workers and time.monotonic() < deadline:
                time.sleep(0.05)
            started = time.perf_counter()
            client.post(url, content=body, headers={"Content-Type": "text/csv"}).raise_for_status()
            samples.append(time.perf_counter() - started)
    return summary_ms(samples)


def idle_endpoints(server: ColdbrewServer, sm: Any, archive: Path, count: int) -> dict[str, Any]:
    assert server.process is not None
    gateway = psutil.Process(server.process.pid)
    before = gateway.memory_info().rss
    for index in range(count):
        deploy_serverless(sm, f"idle-{index}", archive.as_uri())
    for index in range(count):
        wait_for_status(sm, f"idle-{index}", "InService", timeout=300)
    time.sleep(1.0)
    return {
        "endpoints": count,
        "gateway_rss_mb": round(gateway.memory_info().rss / 2**20, 1),
        "gateway_rss_before_mb": round(before / 2**20, 1),
        "worker_processes": worker_count(server),
    }


if __name__ == "__main__":
    main()
