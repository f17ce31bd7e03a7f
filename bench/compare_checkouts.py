"""Two checkouts side by side: interleaved cold starts and warm invocations on one machine.

Starts ``coldbrew serve`` from each checkout (``--before``, ``--after``: paths to two clones at
the commits to compare), deploys the same random forest on each with a 0.3 s idle timeout, then
alternates between them: a cold start (first invoke after scale to zero) and 20 warm invocations
per trial, the order swapped every trial. Interleaving keeps a shared, noisy machine's drift out of
the ratio. Prints medians and the after/before ratios as JSON.

    git clone . /tmp/before && git -C /tmp/before checkout OLD
    python bench/compare_checkouts.py --before /tmp/before --after . [--trials 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import ColdbrewServer, deploy_serverless, sklearn_archive, wait_for_status  # noqa: E402

SIDES = ("before", "after")


def summary(cold: list[float], warm: list[float]) -> dict[str, Any]:
    return {
        "cold_p50_ms": round(statistics.median(cold), 2),
        "cold_p90_ms": round(sorted(cold)[int(0.9 * len(cold))], 2),
        "warm_p50_ms": round(statistics.median(warm), 3),
        "n": len(cold),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", required=True, type=Path, help="a checkout of the older commit")
    parser.add_argument("--after", required=True, type=Path, help="a checkout of the newer commit")
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    archive, _ = sklearn_archive(tmp / "model.tar.gz", n_estimators=50)
    body = ",".join(["0.01"] * 10)
    servers: dict[str, ColdbrewServer] = {}
    try:
        for side, repo in zip(SIDES, (args.before, args.after), strict=True):
            server = ColdbrewServer(tmp / side, env={"COLDBREW_LOG_LEVEL": "warning"}, repo=repo.resolve())
            servers[side] = server.start()
            sm = server.client()
            deploy_serverless(sm, "e", archive.as_uri(), environment={"COLDBREW_IDLE_TIMEOUT_S": "0.3"})
            wait_for_status(sm, "e", "InService")
        time.sleep(8)  # zygotes ready, load-check workers released
        cold: dict[str, list[float]] = {side: [] for side in SIDES}
        warm: dict[str, list[float]] = {side: [] for side in SIDES}
        with httpx.Client(timeout=60) as client:
            for trial in range(args.trials):
                for side in SIDES if trial % 2 == 0 else reversed(SIDES):
                    url = f"{servers[side].url}/endpoints/e/invocations"
                    time.sleep(0.8)  # past the 0.3 s idle timeout: scaled to zero
                    for samples in [cold[side]] + [warm[side]] * 20:
                        started = time.perf_counter()
                        client.post(
                            url, content=body, headers={"Content-Type": "text/csv"}
                        ).raise_for_status()
                        samples.append((time.perf_counter() - started) * 1000)
    finally:
        for server in servers.values():
            server.stop()
    out: dict[str, Any] = {side: summary(cold[side], warm[side]) for side in SIDES}
    out["cold_ratio_after_over_before"] = round(out["after"]["cold_p50_ms"] / out["before"]["cold_p50_ms"], 3)
    out["warm_ratio_after_over_before"] = round(out["after"]["warm_p50_ms"] / out["before"]["warm_p50_ms"], 3)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
