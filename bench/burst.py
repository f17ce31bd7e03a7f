"""The seed's staging burst (issue 18, point 6): open-loop load on a serverless endpoint from zero.

An MLOps team load-tests staging with bursts of 10,000 invocations a minute. This runs that burst
against a real ``coldbrew serve`` on a loopback port: the demo's random forest on a serverless
variant with MaxConcurrency 20, starting from zero environments, invoked by an **open loop**
(Poisson arrivals at the rate, each request sent at its arrival time whether or not earlier ones
have been answered; a closed loop of clients would slow down with the server and hide its queueing).
Then the same at 2x and 4x the rate (``--multipliers``), each from zero again, reporting where it
breaks.

Per rate: requests sent, answered, throttled (ThrottlingException: MaxConcurrency reached, or the
machine's memory budget full with no environment of the endpoint's own to wait for), by reason and
by the second of the run they arrived in, with the answers over 25 ms likewise (a stall shows as a
bad second); other errors; latency p50, p99 and max of the answered ones (from the arrival time,
so time a request waited for a connection counts); cold starts (the meter's
``sagemaker_ColdStarts``) and environment starts (the scaling core's); how late the client
sent requests behind their arrival times (p99; if it grows, the client, not the server, is the
limit: both share this machine's cores); CPU of the server and of the client.

Targets (issue 18): at 10,000 a minute, p99 <= 25 ms and 0 throttles on this machine.

    python bench/burst.py [--rate 10000] [--seconds 120] [--multipliers 1,2,4]
    python bench/burst.py --seconds 20                      # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench.cpu import Cpu  # noqa: E402
from bench.http_client import Client, HttpError  # noqa: E402
from tests.support import ColdbrewServer, deploy_serverless, sklearn_archive, wait_for_status, worker_pids  # noqa: E402

ROW = b"0.03,0.05,0.06,0.02,-0.04,-0.03,-0.04,-0.002,0.02,-0.01"


def cold_starts(server: ColdbrewServer, endpoint: str) -> int:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        if family.name == "sagemaker_ColdStarts":
            return int(sum(s.value for s in family.samples if s.labels.get("EndpointName") == endpoint))
    return 0


def wait_for_zero(server: ColdbrewServer, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not worker_pids(server):
            return True
        time.sleep(0.2)
    return False


async def open_loop(base_url: str, path: str, rate_per_s: float, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    while True:
        t += rng.expovariate(rate_per_s)
        if t >= seconds:
            break
        arrivals.append(t)
    latencies: list[float] = []
    lateness: list[float] = []
    outcomes = {"answered": 0, "throttled": 0, "errors": 0}
    error_samples: list[str] = []
    throttles: dict[str, int] = {}
    throttled_at: list[float] = []
    slow: list[tuple[float, float]] = []
    # A light client (bench/http_client.py): httpx spent more CPU per request than the server.
    client = Client(base_url)
    try:

        async def one(at: float, start: float) -> None:
            sent = time.perf_counter()
            lateness.append(sent - (start + at))
            try:
                answer = await asyncio.wait_for(client.post(path, ROW, "text/csv"), 60)
            except (OSError, asyncio.IncompleteReadError, HttpError, TimeoutError) as e:
                outcomes["errors"] += 1
                if len(error_samples) < 5:
                    error_samples.append(repr(e))
                return
            if answer.status == 200:
                outcomes["answered"] += 1
                latencies.append(time.perf_counter() - (start + at))
                if latencies[-1] > 0.025:
                    slow.append((at, latencies[-1]))
            elif answer.headers.get("x-amzn-errortype", "").startswith("ThrottlingException"):
                # HTTP 400, as on SageMaker: MaxConcurrency reached, or the memory budget full.
                outcomes["throttled"] += 1
                reason = "memory budget" if "memory budget" in answer.text else "MaxConcurrency"
                throttles[reason] = throttles.get(reason, 0) + 1
                throttled_at.append(at)
            else:
                outcomes["errors"] += 1
                if len(error_samples) < 5:
                    error_samples.append(f"{answer.status} {answer.text[:200]}")

        tasks = []
        start = time.perf_counter()
        for at in arrivals:
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(at, start)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    finally:
        await client.close()
    ms = sorted(x * 1000 for x in latencies)
    late = sorted(x * 1000 for x in lateness)
    return {
        "sent": len(arrivals),
        **outcomes,
        "duration_s": round(elapsed, 1),
        "latency_ms": {
            "p50": round(statistics.median(ms), 2) if ms else None,
            "p99": round(float(np.percentile(ms, 99)), 2) if ms else None,
            "max": round(ms[-1], 2) if ms else None,
        },
        "client_late_ms_p99": round(float(np.percentile(late, 99)), 2) if late else None,
        "throttled_by_reason": throttles,
        # Where the trouble is: answers over 25 ms and throttles by the second of the run they
        # arrived in (a stall shows as one bad second; a slow start as the first ones).
        "over_25ms_by_second": _by_second(at for at, _ in slow),
        "throttled_by_second": _by_second(throttled_at),
        "error_samples": error_samples,
    }


def _by_second(times: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in times:
        counts[str(int(t))] = counts.get(str(int(t)), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:10])


def environment_starts(server: ColdbrewServer, endpoint: str) -> int:
    """The scaling core's own count (the meter's sagemaker_ColdStarts lags by a flush)."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        if family.name == "coldbrew_scaling_environment_starts":
            return int(sum(s.value for s in family.samples if s.labels.get("EndpointName") == endpoint))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=10_000, help="invocations a minute")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--multipliers", default="1,2,4")
    parser.add_argument("--max-concurrency", type=int, default=20)
    parser.add_argument("--memory", type=int, default=1024)
    parser.add_argument("--n-estimators", type=int, default=50, help="the demo's forest")
    parser.add_argument("--idle-timeout", type=float, default=30, help="COLDBREW_IDLE_TIMEOUT_S (s)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-bench-burst-"))
    archive, _ = sklearn_archive(tmp / "model.tar.gz", n_estimators=args.n_estimators)
    # An idle timeout short enough that each rate starts from zero environments again, but not so
    # short that environments a burst's peaks started are released and started again all through
    # the run (at 2 s: 60 environment starts in 30 s at 10,000/min), which no deployment on the
    # default (300 s) would see.
    env = {"COLDBREW_IDLE_TIMEOUT_S": str(args.idle_timeout), "COLDBREW_LOGS_ECHO": "false"}
    server = ColdbrewServer(tmp / "data", env=env).start()
    results: dict[str, Any] = {
        "benchmark": "burst",
        "model": f"RandomForestRegressor(n_estimators={args.n_estimators}) on load_diabetes, one CSV row",
        "endpoint": {"MemorySizeInMB": args.memory, "MaxConcurrency": args.max_concurrency},
        "cpus": os.cpu_count(),
        "arrivals": "Poisson (open loop)",
        "idle_timeout_s": args.idle_timeout,
        "runs": [],
    }
    try:
        sm = server.client()
        deploy_serverless(
            sm, "burst", archive.as_uri(), memory=args.memory, max_concurrency=args.max_concurrency
        )
        wait_for_status(sm, "burst", "InService")
        for i, multiplier in enumerate(float(m) for m in args.multipliers.split(",")):
            if not wait_for_zero(server, args.idle_timeout + 60):
                raise SystemExit("the endpoint did not scale to zero between runs")
            rate = args.rate * multiplier
            before = cold_starts(server, "burst")
            starts_before = environment_starts(server, "burst")
            cpu = Cpu(server)
            load = os.getloadavg()[0]
            run = asyncio.run(
                open_loop(server.url, "/endpoints/burst/invocations", rate / 60, args.seconds, seed=i)
            )
            seconds = cpu.seconds()
            run.update(
                rate_per_minute=rate,
                cold_starts=cold_starts(server, "burst") - before,
                environment_starts=environment_starts(server, "burst") - starts_before,
                cpu_s={
                    "server_and_workers": round(seconds["gateway"] + seconds["workers_and_zygotes"], 1),
                    "client": seconds["client"],
                },  # fmt: skip
                load_average_at_start=round(load, 2),
            )
            lat = run["latency_ms"]
            run["meets_target"] = bool(lat["p99"] is not None and lat["p99"] <= 25 and run["throttled"] == 0
                                       and run["errors"] == 0)  # fmt: skip
            results["runs"].append(run)
            print(
                f"[{time.strftime('%H:%M:%S')}] {rate:,.0f}/min: {run['answered']}/{run['sent']} answered, "
                f"{run['throttled']} throttled, p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
                f"{run['cold_starts']} cold starts",
                file=sys.stderr,
            )
    finally:
        server.stop()
    results["target"] = "at 10,000/min: p99 <= 25 ms, 0 throttles"
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
