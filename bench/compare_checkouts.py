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
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import boto3
import httpx
import joblib
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor

parser = argparse.ArgumentParser()
parser.add_argument("--before", required=True)
parser.add_argument("--after", required=True)
parser.add_argument("--trials", type=int, default=40)
args = parser.parse_args()


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


tmp = Path(tempfile.mkdtemp())
X, y = load_diabetes(return_X_y=True)
buf = io.BytesIO()
joblib.dump(RandomForestRegressor(n_estimators=50, random_state=0).fit(X, y), buf)
archive = tmp / "model.tar.gz"
with tarfile.open(archive, "w:gz") as tar:
    info = tarfile.TarInfo("model.joblib")
    data = buf.getvalue()
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
body = ",".join(repr(float(v)) for v in X[0])
servers = {}
for side, repo in (("before", args.before), ("after", args.after)):
    p = port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "coldbrew", "serve", "--port", str(p), "--data-dir", str(tmp / side)],
        cwd=repo,
        env={**os.environ, "COLDBREW_LOG_LEVEL": "warning"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{p}"
    for _ in range(200):
        try:
            if httpx.get(url + "/ping").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    sm = boto3.client(
        "sagemaker",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="a",
    )
    sm.create_model(
        ModelName="m",
        PrimaryContainer={
            "Image": "coldbrew/sklearn",
            "ModelDataUrl": archive.as_uri(),
            "Environment": {"COLDBREW_IDLE_TIMEOUT_S": "0.3"},
        },
    )
    sm.create_endpoint_config(
        EndpointConfigName="c",
        ProductionVariants=[
            {
                "VariantName": "v",
                "ModelName": "m",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2},
            }
        ],
    )
    sm.create_endpoint(EndpointName="e", EndpointConfigName="c")
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName="e", WaiterConfig={"Delay": 0.2, "MaxAttempts": 300}
    )
    servers[side] = (proc, url)
time.sleep(8)  # zygotes ready, load-check workers released
samples = {"before": [], "after": []}
warm = {"before": [], "after": []}
client = httpx.Client(timeout=60)
for trial in range(args.trials):
    for side in ("before", "after") if trial % 2 == 0 else ("after", "before"):
        url = servers[side][1] + "/endpoints/e/invocations"
        time.sleep(0.8)  # past the 0.3 s idle timeout: scaled to zero
        t = time.perf_counter()
        client.post(url, content=body, headers={"Content-Type": "text/csv"}).raise_for_status()
        samples[side].append((time.perf_counter() - t) * 1000)
        for _ in range(20):
            t = time.perf_counter()
            client.post(url, content=body, headers={"Content-Type": "text/csv"}).raise_for_status()
            warm[side].append((time.perf_counter() - t) * 1000)
for proc, _ in servers.values():
    proc.terminate()
    proc.wait()
out = {
    side: {
        "cold_p50_ms": round(statistics.median(v), 2),
        "cold_p90_ms": round(sorted(v)[int(0.9 * len(v))], 2),
        "warm_p50_ms": round(statistics.median(warm[side]), 3),
        "n": len(v),
    }
    for side, v in samples.items()
}
out["cold_ratio_after_over_before"] = round(out["after"]["cold_p50_ms"] / out["before"]["cold_p50_ms"], 3)
out["warm_ratio_after_over_before"] = round(out["after"]["warm_p50_ms"] / out["before"]["warm_p50_ms"], 3)
print(json.dumps(out, indent=1))
