"""The simulator against the live server: the same traces, the same scaling core, side by side.

Two experiments, each run live (a real ``coldbrew serve``, real workers, boto3 clients on loopback)
and then through the simulator (:mod:`coldbrew.simulate.engine`) with the live run's measured
model latencies and cold-start times:

1. ``single``: one endpoint, a trace of bursts and gaps around a short idle timeout, repeated
   ``--repeats`` times. Targets: invocations and environment starts equal; GB-s held and GB-s
   billed within 2%; invocations that waited on their own cold start within +-1.
2. ``many``: ``--endpoints`` endpoints (at least 100) with Zipf-distributed popularity under a
   memory budget far smaller than their sum, so cold starts evict other endpoints' idle
   environments. Targets: cold starts and evictions within 5%.

Live figures come from ``/metrics``: the meter's per-invocation counts (``sagemaker_*``) and the
scaling core's own counters (``coldbrew_scaling_*``, ``coldbrew_memory_budget_evictions``).

    python bench/sim_vs_live.py [--repeats 3] [--endpoints 100] [--skip-many]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from coldbrew.metering.query import open_readonly  # noqa: E402
from coldbrew.scaling.messages import PoolConfig  # noqa: E402
from coldbrew.simulate.engine import UNLIMITED_BUDGET_MB, VariantLoad, simulate_machine  # noqa: E402
from tests.support import ColdbrewServer, deploy_serverless, sklearn_archive, wait_for_status  # noqa: E402

MEMORY_MB = 1024
ROW = ",".join(["0.01"] * 10)


def bursty_trace(scale: float) -> list[float]:
    """Arrival times (s): bursts of parallel requests, steady trickles, and gaps past the timeout."""
    t: list[float] = []

    def burst(start: float, seconds: float, per_s: float, parallel: int) -> None:
        n = int(seconds * per_s)
        for i in range(n):
            t.extend([start + i / per_s] * parallel)

    burst(0, 10, 4, 1)  # cold start, then warm
    burst(20, 6, 2, 3)  # 3 at once: two more environments
    burst(40, 20, 0.5, 1)  # trickle every 2 s: stays warm on one, the others are released
    burst(75, 5, 2, 4)  # 4 at once after a gap past the timeout: four cold starts
    burst(95, 3, 1, 2)
    burst(110, 2, 1, 1)
    burst(125, 8, 3, 2)
    return sorted(x * scale for x in t)


def scrape(server: ColdbrewServer) -> dict[tuple[str, str], float]:
    """(metric sample name, EndpointName or "") -> value, summed over other labels."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "le" in sample.labels or "quantile" in sample.labels:
                continue
            key = (sample.name, sample.labels.get("EndpointName", ""))
            out[key] = out.get(key, 0.0) + sample.value
    return out


def total(metrics: dict[tuple[str, str], float], name: str, endpoint: str | None = None) -> float:
    return sum(v for (n, e), v in metrics.items() if n == name and (endpoint is None or e == endpoint))


def replay(server: ColdbrewServer, schedule: list[tuple[float, str]], workers: int = 64) -> dict[str, int]:
    """Sends each invocation at its time (open loop); returns the failures by error code. (The
    client retries once, as configured in tests.support; a retry is an invocation too.)"""
    runtime = server.client("sagemaker-runtime", read_timeout=120)
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def one(endpoint: str) -> None:
        try:
            runtime.invoke_endpoint(EndpointName=endpoint, Body=ROW, ContentType="text/csv")
        except Exception as exc:  # noqa: BLE001 - any failure is counted and shown, the replay goes on
            code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
            with lock:
                errors[code] += 1

    start = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        for at, endpoint in schedule:
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, endpoint)
    return dict(errors)


def recorded_trace(data: Path, endpoints: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per endpoint, the invocations as the gateway received them: arrival times (seconds after the
    first invocation of any of ``endpoints``) and the model latency measured for each (a token
    1 ms for those that failed before reaching a model), from the meter's records."""
    conn = open_readonly(data / "coldbrew.db")
    marks = ",".join("?" * len(endpoints))
    rows = conn.execute(
        f"SELECT endpoint, started_at, model_latency_us, status FROM meter_records "
        f"WHERE endpoint IN ({marks}) ORDER BY started_at",
        endpoints,
    ).fetchall()
    conn.close()
    t0 = rows[0][1] if rows else 0.0
    per: dict[str, tuple[list[float], list[float]]] = {e.lower(): ([], []) for e in endpoints}
    for endpoint, started_at, model_us, status in rows:
        arrivals, latencies = per[endpoint]
        arrivals.append(started_at - t0)
        latencies.append(model_us / 1e6 if status == 200 else 0.001)
    return {e: (np.asarray(a), np.asarray(lat)) for e, (a, lat) in per.items()}


def start_durations(log_path: Path) -> dict[str, list[float]]:
    """Per endpoint, seconds each environment took to start (load checks left out), in the order
    the starts were asked for (environment ids count up; the log is in order of readiness)."""
    pattern = re.compile(r" ([\w-]+)/AllTraffic: environment (\d+) started in ([\d.]+) ms \((\w+),")
    found = sorted(pattern.findall(log_path.read_text(errors="replace")), key=lambda f: int(f[1]))
    out: dict[str, list[float]] = {}
    for endpoint, _, ms, purpose in found:
        if purpose != "check":
            out.setdefault(endpoint.lower(), []).append(float(ms) / 1000)
    return out


def sequential(values: list[float]) -> Callable[[], float]:
    """The recorded start durations in order; past their end, their median."""
    remaining = iter(values)
    fallback = float(np.median(values)) if values else 0.05
    return lambda: next(remaining, fallback)


def wait_until_empty(server: ColdbrewServer, timeout_s: float) -> None:
    """Until every environment (the load checks' included) has been released."""
    deadline = time.monotonic() + timeout_s
    while total(scrape(server), "coldbrew_memory_budget_used_megabytes") > 0:
        if time.monotonic() > deadline:
            raise SystemExit("environments were not released before the trace")
        time.sleep(0.2)


def diff_percent(sim: float, live: float) -> float | None:
    return None if live == 0 else round((sim - live) / live * 100, 2)


def within(sim: float, live: float, percent: float) -> bool:
    """``sim`` within ``percent`` of ``live`` (both 0 counts as agreeing; only one 0 does not)."""
    if live == 0:
        return sim == 0
    return abs(sim - live) / live * 100 <= percent


# --- 1. one endpoint ------------------------------------------------------------------------------


def run_single(tmp: Path, idle_timeout: float, scale: float) -> dict[str, Any]:
    endpoint, max_concurrency = "simvslive", 4
    arrivals = bursty_trace(scale)
    archive, _ = sklearn_archive(tmp / "model.tar.gz", n_estimators=300)  # tens of ms a prediction
    data = tmp / "data"
    server = ColdbrewServer(data, env={"COLDBREW_LOG_LEVEL": "info"}).start()
    try:
        sm = server.client("sagemaker")
        deploy_serverless(
            sm,
            endpoint,
            f"file://{archive}",
            memory=MEMORY_MB,
            max_concurrency=max_concurrency,
            environment={"COLDBREW_IDLE_TIMEOUT_S": str(idle_timeout)},
        )
        wait_for_status(sm, endpoint, "InService")
        wait_until_empty(server, idle_timeout + 10)
        before = scrape(server)  # the load check's environment is not part of the trace
        errors = replay(server, [(t, endpoint) for t in arrivals])
        time.sleep(idle_timeout + 2.0)  # let the last environments be released
        after = scrape(server)
    finally:
        server.stop()
    # Replayed as recorded: the invocations as the gateway received them, each with the model
    # latency measured for it, and each environment start with the duration the server logged for
    # it. What is left to the simulator is every decision.
    arrivals_seen, recorded = recorded_trace(data, [endpoint])[endpoint]
    config = PoolConfig(
        endpoint=endpoint,
        variant="AllTraffic",
        serverless=True,
        memory_mb=MEMORY_MB,
        max_concurrency=max_concurrency,
        min_environments=0,
        idle_timeout_s=idle_timeout,
    )
    starts = start_durations(server.log_path).get(endpoint, [])
    load = VariantLoad(config, arrivals_seen, recorded, sequential(starts))
    [sim], _ = simulate_machine([load], UNLIMITED_BUDGET_MB, float(arrivals_seen[-1]) + idle_timeout + 60)

    def grew(name: str) -> float:
        return total(after, name, endpoint) - total(before, name, endpoint)

    live = {
        "invocations": int(grew("sagemaker_Invocations_total")),
        "environment_starts": int(grew("coldbrew_scaling_environment_starts_total")),
        "cold_starts": int(grew("sagemaker_ColdStarts_total")),
        "held_gb_seconds": grew("coldbrew_scaling_held_megabyte_seconds_total") / 1024,
        "billed_gb_seconds": grew("sagemaker_ServerlessBilledGBSeconds_total"),
        "errors": errors,
    }
    simulated = {
        "invocations": sim.invocations,
        "environment_starts": sim.environment_starts,
        "cold_starts": sim.cold_starts,
        "held_gb_seconds": sim.held_mb_s / 1024,
        "billed_gb_seconds": sim.billed_ms / 1000 * MEMORY_MB / 1024,
        "throttled": sim.throttled,
    }
    checks = {
        "invocations_equal": live["invocations"] == simulated["invocations"],
        "environment_starts_equal": live["environment_starts"] == simulated["environment_starts"],
        "held_within_2_percent": within(simulated["held_gb_seconds"], live["held_gb_seconds"], 2),
        "billed_within_2_percent": within(simulated["billed_gb_seconds"], live["billed_gb_seconds"], 2),
        "cold_starts_within_1": abs(simulated["cold_starts"] - live["cold_starts"]) <= 1,
    }
    return {
        "arrivals": len(arrivals),
        "live": live,
        "simulated": simulated,
        "difference_percent": {
            k: diff_percent(simulated[k], live[k]) for k in ("held_gb_seconds", "billed_gb_seconds")
        },
        "checks": checks,
    }


# --- 2. many endpoints on one budget --------------------------------------------------------------


def run_many(
    tmp: Path, endpoints: int, budget_envs: int, rate: float, seconds: float, idle_timeout: float, seed: int
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    names = [f"zipf-{i:03d}" for i in range(endpoints)]
    popularity = 1.0 / np.arange(1, endpoints + 1) ** 1.1
    popularity /= popularity.sum()
    n = int(rng.poisson(rate * seconds))
    times = np.sort(rng.uniform(0.0, seconds, n))
    chosen = rng.choice(endpoints, size=n, p=popularity)
    schedule = [(float(t), names[int(i)]) for t, i in zip(times, chosen, strict=True)]
    archive, _ = sklearn_archive(tmp / "model.tar.gz", n_estimators=20)
    data = tmp / "data-many"
    budget_mb = budget_envs * MEMORY_MB
    server = ColdbrewServer(
        data,
        # The live budget also holds the zygotes' memory (issue 18), which the simulator has not:
        # room for them beside the same number of environments (less than one environment more).
        env={"COLDBREW_LOG_LEVEL": "warning", "COLDBREW_MEMORY_BUDGET_MB": str(budget_mb + MEMORY_MB // 2)},
    ).start()
    try:
        sm = server.client("sagemaker")
        environment = {"COLDBREW_IDLE_TIMEOUT_S": str(idle_timeout)}
        for name in names:
            deploy_serverless(
                sm, name, f"file://{archive}", memory=MEMORY_MB, max_concurrency=2, environment=environment
            )
        for name in names:
            wait_for_status(sm, name, "InService", timeout=300)
        wait_until_empty(server, idle_timeout + 30)
        before = scrape(server)
        errors = replay(server, schedule)
        time.sleep(idle_timeout + 2.0)
        after = scrape(server)
    finally:
        server.stop()
    trace = recorded_trace(data, names)
    starts = start_durations(server.log_path)
    loads = [
        VariantLoad(
            PoolConfig(
                endpoint=name,
                variant="AllTraffic",
                serverless=True,
                memory_mb=MEMORY_MB,
                max_concurrency=2,
                min_environments=0,
                idle_timeout_s=idle_timeout,
            ),
            trace[name][0],
            trace[name][1],
            sequential(starts.get(name, [])),
        )
        for name in names
    ]
    results, core = simulate_machine(loads, budget_mb, seconds + idle_timeout + 60)

    def grew(name: str) -> float:
        return total(after, name) - total(before, name)

    live = {
        "invocations": int(grew("sagemaker_Invocations_total")),
        "cold_starts": int(grew("sagemaker_ColdStarts_total")),
        "environment_starts": int(grew("coldbrew_scaling_environment_starts_total")),
        "evictions": int(grew("coldbrew_memory_budget_evictions_total")),
        "throttled": int(grew("coldbrew_scaling_throttled_total")),
        "errors": errors,
    }
    simulated = {
        "invocations": sum(r.invocations for r in results),
        "cold_starts": sum(r.cold_starts for r in results),
        "environment_starts": sum(r.environment_starts for r in results),
        "evictions": core.evictions,
        "throttled": sum(r.throttled for r in results),
    }
    differences = {
        k: diff_percent(simulated[k], live[k]) for k in ("cold_starts", "environment_starts", "evictions")
    }
    return {
        "endpoints": endpoints,
        "memory_budget_mb": budget_mb,
        "arrivals": n,
        "distinct_endpoints_called": int(np.unique(chosen).size),
        "live": live,
        "simulated": simulated,
        "difference_percent": differences,
        "checks": {
            "cold_starts_within_5_percent": within(simulated["cold_starts"], live["cold_starts"], 5),
            "evictions_within_5_percent": within(simulated["evictions"], live["evictions"], 5),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle-timeout", type=float, default=4.0)
    parser.add_argument("--scale", type=float, default=1.0, help="stretch the single trace in time")
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--budget-environments", type=int, default=8)
    parser.add_argument("--rate", type=float, default=20.0, help="invocations a second, many-endpoint trace")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--many-idle-timeout", type=float, default=10.0)
    parser.add_argument("--skip-single", action="store_true")
    parser.add_argument("--skip-many", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    if not args.skip_single:
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(run_single(Path(tmp), args.idle_timeout, args.scale))
        report["single"] = runs
    if not args.skip_many:
        with tempfile.TemporaryDirectory() as tmp:
            report["many"] = run_many(
                Path(tmp),
                args.endpoints,
                args.budget_environments,
                args.rate,
                args.seconds,
                args.many_idle_timeout,
                seed=7,
            )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
