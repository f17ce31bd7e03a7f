"""Replay one short trace against a live coldbrew server and through the simulator, side by side.

The trace has bursts and gaps around a short idle timeout (``COLDBREW_IDLE_TIMEOUT_S`` in the
model's Environment), so the keep-alive decides the cold starts. The simulator is given the live
run's measured mean model latency and cold-start time, then replays the same timestamps through
the same admission and keep-alive code under a virtual clock. Prints JSON; target: cold starts,
GB-seconds and invocations within 5%.

Two cold-start counts: ``environment_starts`` (environments launched on demand, what a cold start
costs in memory) and ``cold_starts`` (invocations that were served by the environment launched for
them; when another environment frees up first, the pool hands it over - a hedged cold start - and
the invocation is not metered as cold). The second depends on the spread of real start times,
which the simulator models as one fixed duration, so it is the less stable of the two.

    python bench/sim_vs_live.py [--idle-timeout 4] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from coldbrew.metering.query import metrics_report, open_readonly  # noqa: E402
from coldbrew.simulate.engine import simulate  # noqa: E402
from coldbrew.simulate.spec import SimulationSpec  # noqa: E402
from tests.support import ColdbrewServer, deploy_serverless, sklearn_archive, wait_for_status  # noqa: E402

ENDPOINT = "simvslive"
MEMORY_MB = 1024
MAX_CONCURRENCY = 4
ROW = ",".join(["0.01"] * 10)


def trace(scale: float) -> list[float]:
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


def prometheus(server: ColdbrewServer) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("EndpointName") == ENDPOINT and "le" not in sample.labels:
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def replay(server: ColdbrewServer, arrivals: list[float]) -> int:
    runtime = server.client("sagemaker-runtime")
    errors = 0
    lock = threading.Lock()

    def one() -> None:
        nonlocal errors
        try:
            runtime.invoke_endpoint(EndpointName=ENDPOINT, Body=ROW, ContentType="text/csv")
        except Exception:  # noqa: BLE001 - any failure is counted and shown, the replay goes on
            with lock:
                errors += 1

    start = time.monotonic()
    threads = []
    for at in arrivals:  # open loop: each request at its time, whatever the others do
        delay = start + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        thread = threading.Thread(target=one)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle-timeout", type=float, default=4.0)
    parser.add_argument("--scale", type=float, default=1.0, help="stretch the trace in time")
    args = parser.parse_args()
    arrivals = trace(args.scale)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        # 300 trees: tens of milliseconds a prediction, a model latency that dominates its noise.
        archive, _ = sklearn_archive(tmp_path / "model.tar.gz", n_estimators=300)
        data = tmp_path / "data"
        server = ColdbrewServer(data, env={"COLDBREW_LOG_LEVEL": "warning"}).start()
        try:
            sm = server.client("sagemaker")
            deploy_serverless(
                sm,
                ENDPOINT,
                f"file://{archive}",
                memory=MEMORY_MB,
                max_concurrency=MAX_CONCURRENCY,
                environment={"COLDBREW_IDLE_TIMEOUT_S": str(args.idle_timeout)},
            )
            wait_for_status(sm, ENDPOINT, "InService")
            time.sleep(1.0)
            errors = replay(server, arrivals)
            time.sleep(args.idle_timeout + 2.0)  # let the last environments be released and sampled
            live = prometheus(server)
        finally:
            server.stop()
        conn = open_readonly(data / "coldbrew.db")
        points = metrics_report(conn, ENDPOINT, time.time() - 3600, 3600)["Datapoints"]
        held_gb_s = sum(p["HeldGBSeconds"] for p in points)
        trace_file = tmp_path / "trace.txt"
        trace_file.write_text("\n".join(f"{t:.6f}" for t in arrivals))
        latency_s = (
            live["sagemaker_ModelLatency_microseconds_sum"]
            / live["sagemaker_ModelLatency_microseconds_count"]
            / 1e6
        )
        # The model latency's distribution, not just its mean: serverless bills each invocation
        # rounded up to the millisecond, and the first invocations of a new worker are slower.
        measured = [
            r[0] / 1e6
            for r in conn.execute(
                "SELECT model_latency_us FROM meter_records WHERE endpoint = ? AND status = 200", [ENDPOINT]
            )
        ]
        setups = live.get("sagemaker_ModelSetupTime_microseconds_count", 0.0)
        cold_start_s = live["sagemaker_ModelSetupTime_microseconds_sum"] / setups / 1e6 if setups else 0.05
        spec = SimulationSpec.model_validate(
            {
                "name": "sim vs live",
                "memory_mb": MEMORY_MB,
                "max_concurrency": MAX_CONCURRENCY,
                "cold_start_s": cold_start_s,
                "cold_start_empirical_s": [
                    r[0] / 1e6
                    for r in conn.execute(
                        "SELECT setup_us FROM meter_records WHERE endpoint = ? AND cold_start = 1", [ENDPOINT]
                    )
                ]
                or None,
                "model_latency": {"empirical_s": measured},
                "keep_alive": {"policy": "fixed", "idle_timeout_s": args.idle_timeout},
                "traffic": {"timestamps_file": str(trace_file)},
            }
        )
        sim = simulate(spec).totals

    def diff(a: float, b: float) -> float | None:
        return None if b == 0 else round((a - b) / b * 100, 2)

    live_figures: dict[str, Any] = {
        "invocations": int(live["sagemaker_Invocations_total"]),
        "cold_starts": int(live.get("sagemaker_ColdStarts_total", 0)),
        "environment_starts": int(live.get("sagemaker_EnvironmentStarts_total", 0)),
        "billed_gb_seconds": live.get("sagemaker_ServerlessBilledGBSeconds_total", 0.0),
        "held_gb_seconds": held_gb_s,
        "errors": errors,
        "mean_model_latency_ms": latency_s * 1000,
        "mean_setup_ms": cold_start_s * 1000,
    }
    sim_figures = {
        "invocations": sim.invocations,
        "cold_starts": sim.cold_starts,
        "environment_starts": sim.environment_starts,
        "throttled": sim.throttled,
        "billed_gb_seconds": sim.billed_ms / 1000 * MEMORY_MB / 1024,
        "held_gb_seconds": sim.held_mb_s / 1024,
    }
    print(
        json.dumps(
            {
                "trace": {
                    "arrivals": len(arrivals),
                    "seconds": arrivals[-1],
                    "idle_timeout_s": args.idle_timeout,
                },
                "live": live_figures,
                "simulated": sim_figures,
                "difference_percent": {
                    k: diff(sim_figures[k], live_figures[k])
                    for k in (
                        "invocations",
                        "cold_starts",
                        "environment_starts",
                        "billed_gb_seconds",
                        "held_gb_seconds",
                    )
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
