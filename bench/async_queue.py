"""Async inference benchmark (issue 12, point 8): the queue's drain against real-time serving, and
what a SIGKILL mid-drain does to it.

A real ``coldbrew serve`` on a loopback port, the random forest of the README's demo (100 trees on
load_diabetes) deployed three times on serverless variants with the same MaxConcurrency:

- ``bench-rt``, real-time: the baseline is ``--requests`` one-row text/csv InvokeEndpoint calls
  from ``--concurrency`` client threads (MaxConcurrency by default: more would be throttled), half
  before the async drain and half after it, so a shared machine's drift weighs on both sides.
- ``bench-async``, with an AsyncInferenceConfig: the one-row inputs are PUT into the embedded S3
  first, then every request is enqueued with InvokeEndpointAsync from ``--enqueue-threads`` threads,
  each 202's arrival time recorded. A lister thread runs ListObjectsV2 on the output prefix every
  ``--list-interval`` s and records when each result object is first seen: a result's latency runs
  from its 202 to the listing that first showed it (an upper bound, too late by at most one listing
  period plus one listing), throughput is requests / (first 202 to last result seen). Each request
  names its result with ``Filename`` (``r00042.out``, SageMaker's own parameter), so the lister
  lists from the lowest index not seen yet (StartAfter) and each listing costs the server a few
  keys, not 10,000. Every 0.2 s by default: the listings are the benchmark's instrument but cost
  the server CPU the real-time phase does not pay (9% of the gateway's busy samples at every
  0.05 s), and with 10,000 queued the latencies run to tens of seconds, so 0.2 s is a 1% bound on
  them. The same figures from the server's clock (async.db ``received_at`` to
  ``finished_at``, committed just after the result object is written) are printed beside them.
  Both endpoints are warmed first (MaxConcurrency environments each). Each phase also reports the
  CPU time the server and its workers spent per request: its inverse ratio is what the throughput
  ratio would be on a machine the server has to itself and is CPU-bound on.
- ``bench-crash``, async, with a ``code/inference.py`` whose predict_fn appends each row's first
  feature (the request's index / 1e6, so every input is unique) to a file, and waits for a gate
  file before its first prediction so that all ``--crash-requests`` are queued before any is done.
  Once a quarter are processed the server gets SIGKILL, is started again on the same data dir, and
  the run waits until every acknowledged request has an outcome. Lines minus distinct values in the
  file are the requests processed more than once; async.db's ``attempts > 1`` says how many the
  queue handed out again.

    python bench/async_queue.py [--requests 10000] [--crash-requests 2000] [--max-concurrency 4]
    python bench/async_queue.py --requests 2000 --crash-requests 400      # a quick run
    git clone . /tmp/head && python bench/async_queue.py --repo /tmp/head  # another checkout serves
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from bench.cpu import Cpu  # noqa: E402
from tests.support import REPO, ColdbrewServer, sklearn_archive, tar_gz, wait_for_status  # noqa: E402

T = TypeVar("T")

BUCKET = "bench"
# The demo's row without its first feature: the first is the request's index / 1e6.
REST = "0.05,0.06,0.02,-0.04,-0.03,-0.04,-0.002,0.02,-0.01"

INFERENCE_PY = """
import os
import time

SEEN, GATE = os.environ["BENCH_SEEN_FILE"], os.environ["BENCH_GATE_FILE"]


def predict_fn(data, model):
    while not os.path.exists(GATE):
        time.sleep(0.01)
    # One write per request, O_APPEND: lines from concurrent workers never interleave.
    with open(SEEN, "a") as seen:
        seen.write("".join(f"{round(row[0] * 1e6)}\\n" for row in data))
    return model.predict(data)
"""


def row(index: int) -> str:
    return f"{index / 1e6:.6f},{REST}"


def result_name(prefix: str, index: int) -> str:
    return f"{prefix}{index:05d}.out"


def in_threads(fn: Callable[[int], T], count: int, threads: int) -> list[T]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, range(count)))


def percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def ms(value: float) -> float:
    return round(value * 1000, 1)


def latency_ms(values: list[float]) -> dict[str, float]:
    return {"p50": ms(statistics.median(values)), "p99": ms(percentile(values, 99)), "max": ms(max(values))}


def deploy(
    sm: Any,
    name: str,
    model_url: str,
    max_concurrency: int,
    output: dict[str, str] | None = None,
    environment: dict[str, str] | None = None,
) -> None:
    container: dict[str, Any] = {"Image": "coldbrew/sklearn", "ModelDataUrl": model_url}
    if environment:
        container["Environment"] = environment
    sm.create_model(
        ModelName=name, PrimaryContainer=container, ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew"
    )
    config: dict[str, Any] = {
        "EndpointConfigName": f"{name}-config",
        "ProductionVariants": [{
            "VariantName": "AllTraffic", "ModelName": name,
            "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": max_concurrency},
        }],
    }  # fmt: skip
    if output:
        config["AsyncInferenceConfig"] = {"OutputConfig": output}
    sm.create_endpoint_config(**config)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def is_throttled(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ThrottlingException"


def upload_inputs(s3: Any, prefix: str, count: int, threads: int) -> float:
    started = time.perf_counter()
    in_threads(
        lambda i: s3.put_object(Bucket=BUCKET, Key=f"{prefix}{i:05d}.csv", Body=row(i).encode()),
        count,
        threads,
    )
    return count / (time.perf_counter() - started)


def wait_for_keys(s3: Any, keys: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for key in keys:
        while True:
            try:
                s3.head_object(Bucket=BUCKET, Key=key)
                break
            except ClientError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no s3://{BUCKET}/{key} after {timeout} s") from None
                time.sleep(0.02)


# --- real-time baseline --------------------------------------------------------------------------


def warm_realtime(runtime: Any, name: str, concurrency: int) -> None:
    """Every environment started: ``concurrency`` calls at once, a few times over."""

    def call(i: int) -> None:
        while True:
            try:
                runtime.invoke_endpoint(EndpointName=name, Body=row(i), ContentType="text/csv")["Body"].read()
                return
            except ClientError as e:
                if not is_throttled(e):
                    raise

    in_threads(call, concurrency * 5, concurrency)


def realtime(
    server: ColdbrewServer, runtime: Any, name: str, start: int, requests: int, concurrency: int
) -> dict[str, Any]:
    counter = itertools.count(start)
    end = start + requests
    latencies: list[float] = []
    throttled = [0]

    def client() -> None:
        while (i := next(counter)) < end:
            body = row(i)
            while True:
                started = time.perf_counter()
                try:
                    runtime.invoke_endpoint(EndpointName=name, Body=body, ContentType="text/csv")[
                        "Body"
                    ].read()
                    break
                except ClientError as e:
                    if not is_throttled(e):
                        raise
                    throttled[0] += 1
            latencies.append(time.perf_counter() - started)

    cpu = Cpu(server)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "requests": requests,
        "throughput_req_s": round(requests / elapsed, 1),
        "latency_ms": latency_ms(latencies),
        "cpu_ms_per_request": cpu.per_request_ms(requests),
        "throttled_and_retried": throttled[0],
        "load_average_at_start": round(load, 2),
        "seconds": elapsed,
    }


# --- async drain ---------------------------------------------------------------------------------


class Lister(threading.Thread):
    """Lists ``prefix`` + index-named keys every ``interval`` s from the lowest index not seen yet,
    and records when each was first seen (the time the listing that showed it came back)."""

    def __init__(self, s3: Any, prefix: str, count: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.s3, self.prefix, self.count, self.interval = s3, prefix, count, interval
        self.seen: dict[int, float] = {}
        self.listings = 0
        self.keys_listed = 0
        self.started_at = self.ended_at = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        self.started_at = time.perf_counter()
        lowest = 0
        while not self.stop.is_set() and len(self.seen) < self.count:
            kwargs: dict[str, Any] = {"Bucket": BUCKET, "Prefix": self.prefix, "MaxKeys": 1000}
            if lowest:
                kwargs["StartAfter"] = result_name(self.prefix, lowest - 1)
            while True:
                page = self.s3.list_objects_v2(**kwargs)
                now = time.perf_counter()
                for item in page.get("Contents", ()):
                    index = int(item["Key"][len(self.prefix) : -len(".out")])
                    self.seen.setdefault(index, now)
                self.keys_listed += page.get("KeyCount", 0)
                if not page.get("IsTruncated"):
                    break
                kwargs["ContinuationToken"] = page["NextContinuationToken"]
            self.listings += 1
            while lowest in self.seen:
                lowest += 1
            self.stop.wait(self.interval)
        self.ended_at = time.perf_counter()


def enqueue(
    runtime: Any, name: str, input_prefix: str, output_name: Callable[[int], str], count: int, threads: int
) -> tuple[list[float], list[dict[str, Any]]]:
    """InvokeEndpointAsync for inputs 0..count-1: the 202s' arrival times and their answers."""
    accepted = [0.0] * count
    answers: list[dict[str, Any]] = [{}] * count

    def invoke(i: int) -> None:
        answers[i] = runtime.invoke_endpoint_async(
            EndpointName=name,
            InputLocation=f"s3://{BUCKET}/{input_prefix}{i:05d}.csv",
            ContentType="text/csv",
            Filename=output_name(i),
        )
        accepted[i] = time.perf_counter()

    in_threads(invoke, count, threads)
    return accepted, answers


def queue_rows(data_dir: Path, endpoint: str) -> list[tuple[str, int, float, float | None, str | None]]:
    """(state, attempts, received_at, finished_at, detail) of the endpoint's rows in async.db."""
    db = sqlite3.connect(f"file:{data_dir / 'async.db'}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT state, attempts, received_at, finished_at, detail FROM requests WHERE endpoint = ?",
            [endpoint],
        ).fetchall()
    finally:
        db.close()


def async_drain(server: ColdbrewServer, s3: Any, runtime: Any, args: argparse.Namespace) -> dict[str, Any]:
    name, n = "bench-async", args.requests
    progress("warming the async endpoint")
    # Warm: MaxConcurrency requests at once, twice, through the queue itself.
    warm = args.max_concurrency * 2
    enqueue(runtime, name, "in/", lambda i: result_name("w", i), warm, warm)
    wait_for_keys(s3, [f"out/{result_name('w', i)}" for i in range(warm)])

    lister = Lister(s3, "out/r", n, args.list_interval)
    load = os.getloadavg()[0]
    cpu = Cpu(server)
    lister.start()
    progress(f"enqueueing {n} async requests")
    first = time.perf_counter()
    accepted, answers = enqueue(runtime, name, "in/", lambda i: result_name("r", i), n, args.enqueue_threads)
    enqueued = time.perf_counter()
    progress(f"enqueued in {enqueued - first:.1f} s; draining")
    lister.join(timeout=max(120.0, n / 20))
    lister.stop.set()
    lister.join()
    cpu_ms = cpu.per_request_ms(n)
    assert all(
        a["OutputLocation"] == f"s3://{BUCKET}/out/{result_name('r', i)}" for i, a in enumerate(answers)
    )
    missing = n - len(lister.seen)
    failures = s3.list_objects_v2(Bucket=BUCKET, Prefix="failures/").get("KeyCount", 0)
    latencies = [lister.seen[i] - accepted[i] for i in lister.seen]
    span = max(lister.seen.values()) - min(accepted)
    rows = [r for r in queue_rows(server.data_dir, name) if r[0] in ("succeeded", "failed")]
    rows = sorted(rows, key=lambda r: r[2])[warm:]  # the warm-up requests came first
    server_span = max(r[3] or 0.0 for r in rows) - min(r[2] for r in rows)
    return {
        "requests": n,
        "enqueue_threads": args.enqueue_threads,
        "enqueue_202_per_s": round(n / (max(accepted) - first), 1),
        "enqueue_s": round(enqueued - first, 2),
        "drain_s": round(span, 2),
        "throughput_req_s": round(n / span, 1),
        "latency_202_to_result_visible_ms": latency_ms(latencies),
        "listing": {
            "period_ms": ms((lister.ended_at - lister.started_at) / max(1, lister.listings)),
            "listings": lister.listings,
            "keys_per_listing": round(lister.keys_listed / max(1, lister.listings), 1),
            "note": "a result is timed at the end of the first listing that shows it: late by at most "
            "one period",
        },
        "server_clock": {
            "throughput_req_s": round(len(rows) / server_span, 1),
            "latency_received_to_finished_ms": latency_ms([(r[3] or 0.0) - r[2] for r in rows]),
        },
        "cpu_ms_per_request": {**cpu_ms, "note": "client: enqueue and listing threads"},
        "load_average_at_start": round(load, 2),
        "results_not_seen": missing,
        "failure_objects": failures,
    }


# --- crash test ----------------------------------------------------------------------------------


def crash_test(
    server: ColdbrewServer,
    s3: Any,
    runtime: Any,
    args: argparse.Namespace,
    seen_file: Path,
    gate: Path,
    model: Any,
) -> dict[str, Any]:
    name, n = "bench-crash", args.crash_requests
    progress(f"crash test: enqueueing {n} requests behind a shut gate")
    # The gate is shut: the first requests wait in predict_fn, all the others in the queue.
    accepted, answers = enqueue(
        runtime, name, "crash-in/", lambda i: result_name("c", i), n, args.enqueue_threads
    )
    failure_index = {a["FailureLocation"].removeprefix(f"s3://{BUCKET}/"): i for i, a in enumerate(answers)}
    assert server.process is not None
    old = psutil.Process(server.process.pid)
    gate.touch()
    while lines(seen_file) < n // 4:
        time.sleep(0.005)
    results_before_kill = len(keys(s3, "crash-out/"))
    children = old.children(recursive=True)
    server.kill()
    killed_at = time.perf_counter()
    processed_at_kill = lines(seen_file)
    progress(f"SIGKILL after {processed_at_kill} of {n} processed")
    psutil.wait_procs(children, timeout=10)
    orphans = [p.pid for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for pid in orphans:  # only the killed server's own children
        psutil.Process(pid).kill()

    server.start()
    restarted = time.perf_counter()
    progress(f"restarted in {restarted - killed_at:.1f} s; waiting for every outcome")
    deadline = time.monotonic() + max(120.0, n / 10)
    while True:
        results = {int(k[len("crash-out/c") : -len(".out")]) for k in keys(s3, "crash-out/")}
        failures = {failure_index[k] for k in keys(s3, "crash-failures/") if k in failure_index}
        if len(results | failures) >= n or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    done = time.perf_counter()

    processed = [int(line) for line in seen_file.read_text().split()]
    # Each result is the request's own: written for its InferenceId, with the model's answer.
    gets = in_threads(
        lambda i: (
            s3.get_object(Bucket=BUCKET, Key=f"crash-out/{result_name('c', i)}") if i in results else None
        ),
        n,
        args.upload_threads,
    )
    expected = model.predict([[float(x) for x in row(i).split(",")] for i in range(n)])
    foreign = wrong = 0
    for i, got in enumerate(gets):
        if got is None:
            continue
        foreign += got["Metadata"].get("coldbrew-request-id") != answers[i]["InferenceId"]
        wrong += int(abs(json.loads(got["Body"].read())[0] - expected[i]) > 1e-6)
    rows = queue_rows(server.data_dir, name)
    states: dict[str, int] = {}
    for state, *_ in rows:
        states[state] = states.get(state, 0) + 1
    return {
        "requests": n,
        "acknowledged": sum(1 for t in accepted if t),
        "processed_when_killed": processed_at_kill,
        "results_listed_just_before_the_kill": results_before_kill,
        "server_children_alive_10s_after_sigkill": len(orphans),
        "restart_to_all_outcomes_s": round(done - restarted, 2),
        "kill_to_all_outcomes_s": round(done - killed_at, 2),
        "without_an_outcome": n - len(results | failures),
        "with_result_and_failure": len(results & failures),
        "failed": len(failures),
        "results_of_another_request": foreign,
        "results_not_the_models_answer": wrong,
        "processed_more_than_once": len(processed) - len(set(processed)),
        "processing_lines": len(processed),
        "never_processed_but_succeeded": len(results - set(processed)),
        "queue": {
            "attempts_gt_1": sum(1 for r in rows if r[1] > 1),
            "found_after_a_restart": sum(1 for r in rows if r[4] == "found after a restart"),
            "states": states,
        },
    }


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def keys(s3: Any, prefix: str) -> list[str]:
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        found += [item["Key"] for item in page.get("Contents", ())]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="async requests, and real-time ones")
    parser.add_argument("--crash-requests", type=int, default=2000, help="0: no crash test")
    parser.add_argument("--max-concurrency", type=int, default=4, help="MaxConcurrency of every endpoint")
    parser.add_argument("--concurrency", type=int, help="real-time client threads (MaxConcurrency)")
    parser.add_argument("--enqueue-threads", type=int, default=8)
    parser.add_argument("--upload-threads", type=int, default=16)
    parser.add_argument("--list-interval", type=float, default=0.2, help="seconds between listings")
    parser.add_argument("--n-estimators", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="keep the data dir (async.db, objects)")
    parser.add_argument("--repo", type=Path, help="the checkout whose coldbrew serves (default: this one)")
    args = parser.parse_args()
    concurrency = args.concurrency or args.max_concurrency

    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-bench-async-"))
    archive, model = sklearn_archive(tmp / "model.tar.gz", n_estimators=args.n_estimators)
    crash_archive = tmp / "crash-model.tar.gz"
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    crash_archive.write_bytes(tar_gz({**members, "code/inference.py": INFERENCE_PY.encode()}))
    seen_file, gate = tmp / "processed.txt", tmp / "gate"
    repo = (args.repo or REPO).resolve()
    # PYTHONPATH too, so the zygotes and workers import the same checkout's coldbrew.
    server = ColdbrewServer(tmp / "data", env={"PYTHONPATH": str(repo)}, repo=repo).start()
    try:
        sm, runtime = server.client(), server.client("sagemaker-runtime", max_pool_connections=32)
        s3 = server.client("s3", max_pool_connections=32)
        s3.create_bucket(Bucket=BUCKET)
        deploy(sm, "bench-rt", archive.as_uri(), args.max_concurrency)
        output = {"S3OutputPath": f"s3://{BUCKET}/out", "S3FailurePath": f"s3://{BUCKET}/failures"}
        deploy(sm, "bench-async", archive.as_uri(), args.max_concurrency, output)
        crash_output = {
            "S3OutputPath": f"s3://{BUCKET}/crash-out",
            "S3FailurePath": f"s3://{BUCKET}/crash-failures",
        }
        environment = {"BENCH_SEEN_FILE": str(seen_file), "BENCH_GATE_FILE": str(gate)}
        deploy(sm, "bench-crash", crash_archive.as_uri(), args.max_concurrency, crash_output, environment)
        for name in ("bench-rt", "bench-async", "bench-crash"):
            wait_for_status(sm, name, "InService")

        n = args.requests
        rate = upload_inputs(s3, "in/", n, args.upload_threads)
        progress(f"{n} async inputs in S3 ({rate:.0f} PUT/s)")
        if args.crash_requests:
            upload_inputs(s3, "crash-in/", args.crash_requests, args.upload_threads)

        # The baseline in two halves, before and after the drain: a busy machine's drift then
        # weighs on both sides of the ratio.
        warm_realtime(runtime, "bench-rt", args.max_concurrency)
        progress(f"real-time: {n // 2} requests from {concurrency} threads")
        before = realtime(server, runtime, "bench-rt", 0, n // 2, concurrency)
        progress(f"real-time: {before['throughput_req_s']} req/s")
        drained = async_drain(server, s3, runtime, args)
        progress(f"async: {drained['throughput_req_s']} req/s; real-time: {n - n // 2} requests")
        after = realtime(server, runtime, "bench-rt", n // 2, n - n // 2, concurrency)
        halves = (before, after)
        baseline = {
            "requests": n,
            "client_threads": concurrency,
            "throughput_req_s": round(n / sum(h.pop("seconds") for h in halves), 1),
            "before_async": before,
            "after_async": after,
        }
        summary: dict[str, Any] = {
            "benchmark": "async_queue",
            "model": f"RandomForestRegressor(n_estimators={args.n_estimators}) on load_diabetes",
            "request": "one row, text/csv",
            "max_concurrency": args.max_concurrency,
            "cpus": os.cpu_count(),
            "realtime": baseline,
            "async": drained,
            "async_over_realtime": {
                "throughput": round(drained["throughput_req_s"] / baseline["throughput_req_s"], 3),
                "target": ">= 0.8",
                # Requests per CPU-second of the server and its workers: the throughput ratio on a
                # machine the server has to itself and is CPU-bound on.
                "server_cpu_per_request_inverse": round(
                    statistics.mean(h["cpu_ms_per_request"]["server_and_workers"] for h in halves)
                    / drained["cpu_ms_per_request"]["server_and_workers"], 3
                ),
            },
        }  # fmt: skip
        if args.crash_requests:
            summary["crash"] = crash_test(server, s3, runtime, args, seen_file, gate, model)
        summary["load_average"] = round(os.getloadavg()[0], 2)
        if args.keep:
            summary["data_dir"] = str(server.data_dir)
        print(json.dumps(summary, indent=2))
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
