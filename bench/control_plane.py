"""Control-plane scale benchmark (issue 18, point 7): 10,000 endpoints registered, scaled to zero.

Targets: gateway RSS <= 150 MB, ListEndpoints page p50 <= 20 ms, DescribeEndpoint p50 <= 2 ms, warm
invocations unaffected by the endpoints registered, and a server with 10,000 endpoints in its
database answering ``/ping`` within 5 s of its start.

1. A real ``coldbrew serve`` deploys ``--warm`` serverless endpoints through boto3 (their load
   checks run), then stops.
2. Its database is copied twice, and each copy filled up with endpoints made from the first one's
   row (the same model, config and deployment, their own names, ARNs and creation times), up to
   ``--small`` endpoints in one and ``--endpoints`` in the other. They are real InService endpoints:
   the server restores each at its start (scaled to zero) as it restores any after a restart;
   writing rows skips only the 10,000 load checks CreateEndpoint would run.
3. The big data dir is started ``--restarts`` times: seconds from the process's start to ``/ping``
   answering 200 (and, on the first start, until every endpoint's pool exists).
4. Both servers then run at once, and once every endpoint is back: the warm endpoints are invoked
   through boto3, the two servers' requests interleaved (so the machine's load falls on both alike);
   then ListEndpoints (MaxResults default and 100, a later page, NameContains, SortBy Name) and
   DescribeEndpoint of random endpoints on the big one; RSS of the gateway process alone and of its
   whole tree (zygotes, warm workers), before and after; each gateway's CPU over 10 s with no
   requests (what sampling every endpoint costs); ``GET /metrics`` on the big one.

Figures are medians (p50) and p99 in ms, each with the load average when it was taken: the
machine's other work shows in them.

    python bench/control_plane.py [--endpoints 10000] [--small 10] [--warm 3] [--requests 200]
        [--invokes 1000] [--restarts 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from tests.support import ColdbrewServer, deploy_serverless, sklearn_archive, wait_for_status  # noqa: E402

BODY = "0.038,0.050,0.061,0.021,-0.044,-0.034,-0.043,-0.002,0.019,-0.017"


def load() -> float:
    return round(os.getloadavg()[0], 2)


def summary(samples_s: list[float]) -> dict[str, float]:
    ms = np.array(samples_s) * 1000
    return {
        "p50_ms": round(float(np.median(ms)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "n": len(ms),
        "load_average": load(),
    }


def timed(call: Callable[[], Any], n: int) -> dict[str, float]:
    call()  # the first: connection set up
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return summary(samples)


def seed(tmp: Path, archive: Path, warm: int, env: dict[str, str]) -> Path:
    """A data dir with ``warm`` endpoints deployed through the API."""
    data = tmp / "seed" / "data"
    data.parent.mkdir(parents=True)
    server = ColdbrewServer(data, env=env).start()
    try:
        sm = server.client()
        for i in range(warm):
            deploy_serverless(sm, f"warm-{i}", archive.as_uri(), max_concurrency=2)
        for i in range(warm):
            wait_for_status(sm, f"warm-{i}", "InService", timeout=120)
    finally:
        server.stop()
    return data


def fill(data: Path, total: int) -> None:
    """Endpoints made from ``warm-0``'s row, up to ``total`` in all, created one ms apart (so every
    sort order has a single answer), as CreateEndpoint would have left them once InService."""
    conn = sqlite3.connect(data / "coldbrew.db", isolation_level=None)
    template = conn.execute("SELECT * FROM endpoints WHERE name_key = 'warm-0'").fetchone()
    columns = [d[0] for d in conn.execute("SELECT * FROM endpoints LIMIT 0").description]
    have = conn.execute("SELECT count(*) FROM endpoints").fetchone()[0]
    row = dict(zip(columns, template, strict=True))
    arn_prefix = row["arn"].rsplit("/", 1)[0]
    base = row["created_at"] - total * 0.001
    rows = []
    for i in range(total - have):
        name = f"endpoint-{i:05d}"
        rows.append(
            {
                **row,
                "name_key": name,
                "name": name,
                "arn": f"{arn_prefix}/{name}",
                "created_at": base + i * 0.001,
                "modified_at": base + i * 0.001,
            }
        )
    placeholders = ", ".join("?" for _ in columns)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        f"INSERT INTO endpoints ({', '.join(columns)}) VALUES ({placeholders})",
        [[r[c] for c in columns] for r in rows],
    )
    conn.execute("COMMIT")
    conn.close()


def restored(server: ColdbrewServer) -> int:
    """How many endpoints the server has brought back: its log's "is InService" lines (read from
    the log, not ``/metrics``, whose 10,000 endpoints' series would load the server measured)."""
    return server.log().count(" is InService")


def settle(server: ColdbrewServer, endpoints: int, started: float, timeout: float = 900.0) -> float:
    """Seconds from ``started`` until every endpoint is back."""
    deadline = time.monotonic() + timeout
    while restored(server) < endpoints:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {restored(server)} endpoints came back within {timeout} s")
        time.sleep(0.5)
    return time.perf_counter() - started


def start(data: Path, env: dict[str, str]) -> tuple[ColdbrewServer, float]:
    """A server on ``data`` and its seconds from process start to ``/ping`` 200."""
    server = ColdbrewServer(data, env=env)
    server.log_path.unlink(missing_ok=True)  # appended to by each start: ``restored`` counts this one's
    started = time.perf_counter()
    server.start(timeout=120)
    return server, time.perf_counter() - started


def rss(server: ColdbrewServer) -> dict[str, float]:
    assert server.process is not None
    gateway = psutil.Process(server.process.pid)
    tree = gateway.memory_info().rss
    for child in gateway.children(recursive=True):
        try:
            tree += child.memory_info().rss
        except psutil.Error:
            pass
    return {
        "gateway_rss_mb": round(gateway.memory_info().rss / 2**20, 1),
        "tree_rss_mb": round(tree / 2**20, 1),
        "load_average": load(),
    }


def idle_cpu(servers: list[ColdbrewServer], seconds: float = 10.0) -> list[dict[str, float]]:
    """Each gateway's CPU time over ``seconds`` of no requests, as a fraction of one core (the meter's
    sampling of every endpoint, housekeeping): taken over the same seconds for all."""
    processes = [psutil.Process(s.process.pid) for s in servers if s.process is not None]
    before = [sum(p.cpu_times()[:2]) for p in processes]
    time.sleep(seconds)
    after = [sum(p.cpu_times()[:2]) for p in processes]
    return [
        {"core_fraction": round((a - b) / seconds, 4), "seconds": seconds, "load_average": load()}
        for a, b in zip(after, before, strict=True)
    ]


def metrics_scrapes(server: ColdbrewServer, n: int = 10) -> dict[str, Any]:
    """``GET /metrics`` on the big server: latency, and the page's size."""
    http = httpx.Client(base_url=server.url, timeout=120)
    out = timed(lambda: http.get("/metrics").raise_for_status(), n)
    out["bytes"] = len(http.get("/metrics").content)
    return out


def startups(data: Path, env: dict[str, str], endpoints: int, restarts: int) -> dict[str, Any]:
    to_ping, restored = [], None
    for i in range(restarts):
        started = time.perf_counter()
        server, _ = start(data, env)
        to_ping.append(time.perf_counter() - started)
        try:
            if i == 0:
                restored = settle(server, endpoints, started)
        finally:
            server.stop()
    return {
        "to_ping_s_median": round(statistics.median(to_ping), 3),
        "to_ping_s": [round(s, 3) for s in to_ping],
        "all_restored_s_first_start": round(restored or 0.0, 2),
        "load_average": load(),
    }


def warm_invokes(servers: list[ColdbrewServer], warm: int, invokes: int) -> list[dict[str, float]]:
    """Each server's warm invoke latency, their requests interleaved in blocks of 20."""
    runtimes = [s.client("sagemaker-runtime") for s in servers]

    def call(runtime: Any, i: int) -> None:
        runtime.invoke_endpoint(EndpointName=f"warm-{i % warm}", Body=BODY, ContentType="text/csv")[
            "Body"
        ].read()

    for runtime in runtimes:  # each warm endpoint's environment started (a cold start), and warm
        for i in range(warm * 20):
            call(runtime, i)
    samples: list[list[float]] = [[] for _ in servers]
    for block in range(max(1, invokes // 20)):
        for s, runtime in enumerate(runtimes):
            for i in range(20):
                started = time.perf_counter()
                call(runtime, block * 20 + i)
                samples[s].append(time.perf_counter() - started)
    return [summary(s) for s in samples]


def control_calls(server: ColdbrewServer, endpoints: int, requests: int) -> dict[str, Any]:
    sm = server.client()
    rng = random.Random(18)
    later = sm.list_endpoints(MaxResults=100)["NextToken"]
    for _ in range(min(20, endpoints // 100 - 2)):  # a page deep in the list, by the tokens before
        later = sm.list_endpoints(MaxResults=100, NextToken=later)["NextToken"]
    names = [f"endpoint-{rng.randrange(endpoints - 50):05d}" for _ in range(requests + 1)]
    described = iter(names)
    out = {
        "list_endpoints_default": timed(lambda: sm.list_endpoints(), requests),
        "list_endpoints_100": timed(lambda: sm.list_endpoints(MaxResults=100), requests),
        "list_endpoints_100_later_page": timed(
            lambda: sm.list_endpoints(MaxResults=100, NextToken=later), requests
        ),
        "list_endpoints_name_contains": timed(
            lambda: sm.list_endpoints(NameContains="point-012", MaxResults=100), requests
        ),
        "list_endpoints_sort_name": timed(
            lambda: sm.list_endpoints(SortBy="Name", SortOrder="Ascending", MaxResults=100), requests
        ),
        "list_endpoints_status_in_service": timed(
            lambda: sm.list_endpoints(StatusEquals="InService", MaxResults=100), requests
        ),
        "describe_endpoint": timed(lambda: sm.describe_endpoint(EndpointName=next(described)), requests),
    }
    # The same Describe on the wire alone, without botocore's own work in the client.
    http = httpx.Client(base_url=server.url)
    headers = {"X-Amz-Target": "SageMaker.DescribeEndpoint", "Content-Type": "application/x-amz-json-1.1"}
    wire = iter(names)
    out["describe_endpoint_httpx"] = timed(
        lambda: http.post(
            "/", content=json.dumps({"EndpointName": next(wire)}), headers=headers
        ).raise_for_status(),
        requests,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=10, help="endpoints of the comparison server")
    parser.add_argument("--warm", type=int, default=3, help="endpoints kept warm and invoked")
    parser.add_argument("--requests", type=int, default=200, help="of each control-plane call")
    parser.add_argument("--invokes", type=int, default=1000, help="warm invokes per server")
    parser.add_argument("--restarts", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-bench-control-"))
    archive, _ = sklearn_archive(tmp / "model.tar.gz")
    env = {
        "COLDBREW_MAX_ENDPOINTS": str(args.endpoints + 10),
        "COLDBREW_LOGS_ECHO": "false",
        "COLDBREW_LOG_LEVEL": "info",  # each endpoint brought back is logged: see ``restored``
    }
    report: dict[str, Any] = {
        "endpoints": args.endpoints,
        "small": args.small,
        "warm": args.warm,
        "targets": {
            "gateway_rss_mb": 150,
            "list_endpoints_p50_ms": 20,
            "describe_endpoint_p50_ms": 2,
            "startup_to_ping_s": 5,
        },
        "cpus": os.cpu_count(),
        "load_average_at_start": load(),
    }
    servers: list[ColdbrewServer] = []
    try:
        seeded = seed(tmp, archive, args.warm, env)
        datas = {}
        for label, total in (("small", args.small), ("large", args.endpoints)):
            datas[label] = tmp / label / "data"
            shutil.copytree(seeded, datas[label])
            fill(datas[label], total)
        print(json.dumps(report), file=sys.stderr)
        report["startup_large"] = startups(datas["large"], env, args.endpoints, args.restarts)
        for label, total in (("small", args.small), ("large", args.endpoints)):
            started = time.perf_counter()
            server, _ = start(datas[label], env)
            servers.append(server)
            settle(server, total, started)
        time.sleep(2)
        report["rss_settled"] = {"small": rss(servers[0]), "large": rss(servers[1])}
        report["idle_gateway_cpu"] = dict(zip(("small", "large"), idle_cpu(servers), strict=True))
        small, large = warm_invokes(servers, args.warm, args.invokes)
        report["warm_invoke_boto3"] = {"small": small, "large": large}
        report["control_large"] = control_calls(servers[1], args.endpoints, args.requests)
        report["metrics_scrape_large"] = metrics_scrapes(servers[1])
        print(json.dumps(report), file=sys.stderr)
        report["rss_after"] = {"small": rss(servers[0]), "large": rss(servers[1])}
        report["warm_invoke_boto3_again"] = dict(
            zip(("small", "large"), warm_invokes(servers, args.warm, args.invokes // 2), strict=True)
        )
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    control = report["control_large"]
    report["meets"] = {
        "gateway_rss": report["rss_after"]["large"]["gateway_rss_mb"] <= 150,
        "list_endpoints": max(control[k]["p50_ms"] for k in control if k.startswith("list_endpoints")) <= 20,
        "describe_endpoint": control["describe_endpoint"]["p50_ms"] <= 2,
        "startup": report["startup_large"]["to_ping_s_median"] <= 5,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
