"""Batch transform benchmark (issue 13): a big CSV through the random forest as a transform job,
against the same model's in-process ``predict`` over the same data on both cores, in the same run.

    python bench/batch_transform.py [--lines 1000000] [--single-lines 20000] [--objects 2]

What it measures, each on a fresh ``coldbrew serve`` on a loopback port with the embedded S3:

- **in-process baselines**: the CSV parsed (``numpy.loadtxt``, a C parser) and predicted with ``n_jobs=2``;
  and ``predict`` alone on the parsed array (the model's own ceiling);
- **MultiRecord**: ``--lines`` lines in ``--objects`` objects, SplitType Line, 6 MB payloads,
  one instance per core (``ml.m5.large`` x ``--instances``), MaxConcurrentTransforms
  ``--concurrency`` (1);
- **SingleRecord**: ``--single-lines`` lines (one invocation per line: a million would take the
  better part of an hour), otherwise the same;
- **real-time latency next to a job**: a serverless endpoint's warm p50/p99 alone and while the
  MultiRecord job runs a second time (the job's workers are niced and preemptible: it should
  yield); the job's records per second are measured on the first run, with nothing beside it, and
  reported for the second too.

Records per second are counted from CreateTransformJob to the status Completed (what a user
waits), and also from the job's TransformStartTime to TransformEndTime. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cpu import Cpu  # noqa: E402
from tests.support import ColdbrewServer, deploy_serverless, sklearn_archive, wait_for_status  # noqa: E402

BUCKET = "bench-transform"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


def csv_lines(rows: int) -> bytes:
    """``rows`` lines of load_diabetes' features (repeated), as a data engineer would export them."""
    from sklearn.datasets import load_diabetes

    features = load_diabetes(return_X_y=True)[0]
    tiled = np.resize(features, (rows, features.shape[1]))
    out = io.StringIO()
    np.savetxt(out, tiled, delimiter=",", fmt="%.8g")
    return out.getvalue().encode()


def split_lines(data: bytes, parts: int) -> list[bytes]:
    lines = data.splitlines(keepends=True)
    size = -(-len(lines) // parts)
    return [b"".join(lines[i : i + size]) for i in range(0, len(lines), size)]


def in_process(model: Any, data: bytes, repeats: int) -> dict[str, float]:
    model.set_params(n_jobs=2)
    parse_and_predict, predict_only, cpu = [], [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        rows = np.loadtxt(io.BytesIO(data), delimiter=",", dtype=np.float64, ndmin=2)
        parsed = time.perf_counter()
        model.predict(rows)
        done = time.perf_counter()
        parse_and_predict.append(done - started)
        predict_only.append(done - parsed)
        cpu.append(time.process_time() - cpu_started)
    model.set_params(n_jobs=None)
    count = data.count(b"\n")
    return {
        "parse_and_predict_records_per_s": round(count / statistics.median(parse_and_predict)),
        "predict_only_records_per_s": round(count / statistics.median(predict_only)),
        "parse_and_predict_cpu_s": round(statistics.median(cpu), 2),
    }


def run_job(sm: Any, name: str, prefix: str, strategy: str, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    sm.create_transform_job(
        TransformJobName=name,
        ModelName="forest",
        BatchStrategy=strategy,
        MaxPayloadInMB=6,
        MaxConcurrentTransforms=args.concurrency,
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/{prefix}/"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        # text/csv: one prediction per line, as the input came (the scikit-learn default, JSON,
        # would be one array per batch).
        TransformOutput={
            "S3OutputPath": f"s3://{BUCKET}/out/{name}",
            "AssembleWith": "Line",
            "Accept": "text/csv",
        },
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": args.instances},
    )
    while True:
        job = sm.describe_transform_job(TransformJobName=name)
        if job["TransformJobStatus"] not in ("InProgress", "Stopping"):
            break
        time.sleep(0.05)
    waited = time.perf_counter() - started
    if job["TransformJobStatus"] != "Completed":
        raise SystemExit(f"{name}: {job['TransformJobStatus']}: {job.get('FailureReason')}")
    ran = (job["TransformEndTime"] - job["TransformStartTime"]).total_seconds()
    return {"wall_s": round(waited, 2), "start_to_end_s": round(ran, 2)}


def count_output(s3: Any, name: str) -> int:
    total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"out/{name}/"):
        for item in page.get("Contents", []):
            total += s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read().count(b"\n")
    return total


class Prober:
    """Warm invocations of a real-time endpoint, one at a time, while ``running`` is set."""

    def __init__(self, url: str, body: str) -> None:
        self.url, self.body = url, body
        self.samples: list[float] = []
        self.running = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while self.running.is_set():
                started = time.perf_counter()
                answer = client.post(self.url, content=self.body, headers={"Content-Type": "text/csv"})
                answer.raise_for_status()
                self.samples.append(time.perf_counter() - started)
                time.sleep(0.005)

    def __enter__(self) -> Prober:
        self.running.set()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running.clear()
        self.thread.join()


def latency(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "n": len(ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--single-lines", type=int, default=20_000)
    parser.add_argument("--objects", type=int, default=2, help="input objects the lines are split into")
    parser.add_argument("--instances", type=int, default=2, help="InstanceCount (ml.m5.large, 2 vCPUs each)")
    parser.add_argument("--concurrency", type=int, default=1, help="MaxConcurrentTransforms")
    parser.add_argument("--n-estimators", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="in-process baseline repeats (median)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-bench-transform-"))
    archive, model = sklearn_archive(tmp / "model.tar.gz", n_estimators=args.n_estimators)
    data = csv_lines(args.lines)
    single = csv_lines(args.single_lines)
    results: dict[str, Any] = {
        "model": f"RandomForestRegressor(n_estimators={args.n_estimators}) on load_diabetes",
        "lines": args.lines,
        "csv_mb": round(len(data) / 1e6, 1),
        "objects": args.objects,
        "instances": args.instances,
        "max_concurrent_transforms": args.concurrency,
        "in_process": in_process(model, data, args.repeats),
    }

    server = ColdbrewServer(tmp / "data").start()
    try:
        sm = server.client()
        s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
        s3.create_bucket(Bucket=BUCKET)
        for i, part in enumerate(split_lines(data, args.objects)):
            s3.put_object(Bucket=BUCKET, Key=f"multi/part-{i:03d}.csv", Body=part)
        for i, part in enumerate(split_lines(single, args.objects)):
            s3.put_object(Bucket=BUCKET, Key=f"single/part-{i:03d}.csv", Body=part)
        s3.upload_file(str(archive), BUCKET, "model/model.tar.gz")
        sm.create_model(
            ModelName="forest",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": "sklearn", "ModelDataUrl": f"s3://{BUCKET}/model/model.tar.gz"},
        )

        deploy_serverless(sm, "realtime", archive.as_uri(), max_concurrency=2)
        wait_for_status(sm, "realtime", "InService")
        row = data.split(b"\n", 1)[0].decode()
        url = f"{server.url}/endpoints/realtime/invocations"
        with httpx.Client() as client:
            for _ in range(50):
                client.post(url, content=row, headers={"Content-Type": "text/csv"}).raise_for_status()
        with Prober(url, row) as alone:
            time.sleep(5)

        # The job's throughput on its own, then the same job again beside the probe: the probe's
        # own invocations (client, gateway and worker) take CPU the job would otherwise have.
        cpu = Cpu(server)
        multi = run_job(sm, "multi", "multi", "MultiRecord", args)
        # The gateway's own CPU (reading, cutting, sending, assembling, writing); the workers'
        # exits are not all reaped inside the tree by then, so theirs is not reported.
        multi["gateway_cpu_s"] = cpu.seconds()["gateway"]
        multi["records_per_s"] = round(args.lines / multi["wall_s"])
        multi["output_lines"] = count_output(s3, "multi")
        results["multi_record"] = multi
        with Prober(url, row) as beside:
            probed = run_job(sm, "multi-probed", "multi", "MultiRecord", args)
        probed["records_per_s"] = round(args.lines / probed["wall_s"])
        results["multi_record_beside_realtime"] = probed
        results["realtime_alone"] = latency(alone.samples)
        results["realtime_beside_job"] = latency(beside.samples)

        one = run_job(sm, "single", "single", "SingleRecord", args)
        one["records_per_s"] = round(args.single_lines / one["wall_s"])
        one["output_lines"] = count_output(s3, "single")
        results["single_record"] = one
    finally:
        server.stop()

    baseline = results["in_process"]
    for kind in ("multi_record", "multi_record_beside_realtime", "single_record"):
        rate = results[kind]["records_per_s"]
        results[kind]["vs_parse_and_predict"] = round(rate / baseline["parse_and_predict_records_per_s"], 3)
        results[kind]["vs_predict_only"] = round(rate / baseline["predict_only_records_per_s"], 3)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
