"""Deploy benchmark (issue 10, point 4): CreateEndpoint -> InService, and the first invocation.

A real ``coldbrew serve`` on a loopback port, the random forest of the README's demo, the
scikit-learn zygote warm (the first deploy of a run waits for its imports and is reported apart).
Each trial creates a model, config and endpoint, polls DescribeEndpoint every 5 ms until it is
InService, invokes once, and deletes it. The baseline, measured in the same run, is a warm
invocation of an endpoint that is already serving: the first invocation after CreateEndpoint should
cost about that (the worker that passed the load check serves it), not a cold start.

    python bench/deploy.py [--trials 15]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import ColdbrewServer, deploy_serverless, sklearn_archive, wait_for_status  # noqa: E402

ROW = "0.03,0.05,0.06,0.02,-0.04,-0.03,-0.04,-0.002,0.02,-0.01"


def deploy_once(sm: Any, runtime: Any, name: str, url: str) -> tuple[float, float]:
    started = time.perf_counter()
    deploy_serverless(sm, name, url)
    while sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Creating":
        time.sleep(0.005)
    in_service = time.perf_counter() - started
    started = time.perf_counter()
    runtime.invoke_endpoint(EndpointName=name, Body=ROW, ContentType="text/csv")["Body"].read()
    first = time.perf_counter() - started
    return in_service, first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=15)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-bench-"))
    archive, _ = sklearn_archive(tmp / "model.tar.gz", n_estimators=100)
    server = ColdbrewServer(tmp / "data").start()
    try:
        sm, runtime = server.client(), server.client("sagemaker-runtime")
        first_deploy = deploy_once(sm, runtime, "first", archive.as_uri())
        wait_for_status(sm, "first", "InService")
        warm = []
        for _ in range(50):
            started = time.perf_counter()
            runtime.invoke_endpoint(EndpointName="first", Body=ROW, ContentType="text/csv")["Body"].read()
            warm.append(time.perf_counter() - started)
        in_service, first_invoke = [], []
        for trial in range(args.trials):
            name = f"trial-{trial}"
            deployed, invoked = deploy_once(sm, runtime, name, archive.as_uri())
            in_service.append(deployed)
            first_invoke.append(invoked)
            sm.delete_endpoint(EndpointName=name)
        ms = lambda values: round(statistics.median(values) * 1000, 1)  # noqa: E731
        print(json.dumps({
            "model": "RandomForestRegressor(n_estimators=100) on load_diabetes, file:// archive",
            "first_deploy_of_the_run_ms": {"in_service": round(first_deploy[0] * 1000, 1)},
            "create_endpoint_to_in_service_ms": {"p50": ms(in_service), "max": ms([max(in_service)])},
            "first_invocation_ms": {"p50": ms(first_invoke)},
            "baseline_warm_invocation_ms": {"p50": ms(warm)},
            "first_over_warm": round(statistics.median(first_invoke) / statistics.median(warm), 2),
            "trials": args.trials,
        }, indent=2))  # fmt: skip
    finally:
        server.stop()


if __name__ == "__main__":
    main()
