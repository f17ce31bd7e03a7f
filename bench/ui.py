"""Dashboard benchmark (issue 15, point 2): the endpoints page with 1,000 endpoints registered.

Aims: under 300 KB transferred for the endpoints page and under 200 ms of server time.

1. A real ``coldbrew serve`` gets 1,000 serverless endpoints through boto3 (one model and endpoint
   config, CreateEndpoint 1,000 times from a few threads; each endpoint's load check runs, and a
   1 s keep-alive releases its worker), then stops.
2. Metered history is written into its store the way the meter writes it (``MinuteAggregate`` rows
   with the meter's upsert, as ``bench/cloudwatch.py`` does, in time order): ``--busy`` endpoints
   (default: all) invoked in each of the last 60 minutes (so each has percentiles to compute, from
   the histograms), and an hourly row for every endpoint back to the start of the month (what
   "cost this month" sums).
3. The server starts again on that data dir; once every endpoint is back (scaled to zero; their
   pools in ``/metrics``), ``GET /ui`` is fetched as a browser fetches it (``Accept-Encoding:
   gzip``), ``--requests`` times.

Reported, as medians: bytes on the wire (headers and gzip body) and uncompressed, the server's own
time (its ``Server-Timing`` header: reads, view and template, before compression) and the time the
client waited for the whole response; plus the static files the page loads (first visit; cached
after), ``/ui/api/endpoints`` (the same data as JSON) and the cost page (``/ui/cost``, seven days,
and ``/ui/cost?days=31``).

Registering takes minutes (every endpoint's load check starts a worker); ``--registered DIR`` keeps
the registered data dir there and copies it on later runs, so history is always written fresh, up to
the minute the run starts. ``--repo PATH`` (repeatable) serves from other checkouts, all at once,
each on its own copy of the same data, their requests interleaved, so two commits are compared in
one machine state:

    git worktree add /tmp/ui-before OLD
    python bench/ui.py --registered /tmp/ui-registered --repo /tmp/ui-before --repo .

    python bench/ui.py [--endpoints 1000] [--busy 1000] [--requests 20] [--threads 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench.cloudwatch import VARIANT, templates  # noqa: E402
from coldbrew.metering.aggregate import register_sql_functions, upsert_sql  # noqa: E402
from coldbrew.metering.prices import load_prices  # noqa: E402
from coldbrew.metering.query import cost_report  # noqa: E402
from tests.support import ColdbrewServer, sklearn_archive  # noqa: E402

STATIC = ("/ui/static/ui.css", "/ui/static/ui.js", "/ui/static/favicon.svg")


def register(server: ColdbrewServer, archive: Path, endpoints: int, threads: int) -> float:
    sm = server.client()
    sm.create_model(ModelName="bench-rf", PrimaryContainer={"ModelDataUrl": str(archive)})
    sm.create_endpoint_config(
        EndpointConfigName="bench-rf",
        ProductionVariants=[
            {
                "VariantName": VARIANT,
                "ModelName": "bench-rf",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 5},
            }
        ],
    )
    started = time.perf_counter()

    def create(i: int) -> None:
        server.client().create_endpoint(EndpointName=f"endpoint-{i:04d}", EndpointConfigName="bench-rf")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, range(endpoints)))
    while True:
        pending = [
            e
            for page in sm.get_paginator("list_endpoints").paginate()
            for e in page["Endpoints"]
            if e["EndpointStatus"] != "InService"
        ]
        if not pending:
            break
        if any(e["EndpointStatus"] == "Failed" for e in pending):
            raise SystemExit(f"an endpoint failed: {pending[0]}")
        time.sleep(1)
    return time.perf_counter() - started


def write_history(db: Path, endpoints: int, busy: int, now: int) -> int:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=10000")
    register_sql_functions(conn)
    sql = upsert_sql()
    rng = random.Random(15)
    pool = templates(rng)
    this_minute = now // 60 * 60
    month = int(dt.datetime.fromtimestamp(now, dt.UTC).replace(day=1, hour=0, minute=0, second=0).timestamp())
    # Back to the month's start (cost this month) and at least the cost page's seven days.
    first = min(month, (now // 86400 - 6) * 86400)
    # In time order, every endpoint's row of a minute (or hour) together, as the meter writes them.
    hours = list(range(first, this_minute - 3600, 3600))
    times = hours + [this_minute - m * 60 for m in range(59, -1, -1)]
    rows = 0
    for i, at in enumerate(times):
        invoked = endpoints if i < len(hours) else busy
        batch = [(f"endpoint-{e:04d}", VARIANT, at, *pool[(i + e) % len(pool)].row()) for e in range(invoked)]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, batch)
        conn.execute("COMMIT")
        rows += len(batch)
    conn.close()
    return rows


def settle(client: httpx.Client, endpoints: int, timeout: float = 600.0) -> None:
    """Wait until the restarted server has brought every endpoint back (its pools in /metrics):
    until then the reconciler's deploys share the machine with the requests measured."""
    deadline = time.monotonic() + timeout
    while True:
        names = set()
        for family in text_string_to_metric_families(client.get("/metrics").text):
            if family.name == "coldbrew_scaling_environments":
                names.update(sample.labels["EndpointName"] for sample in family.samples)
        if len(names) >= endpoints:
            time.sleep(2)  # the last deploy's own work
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(names)} endpoints came back within {timeout} s")
        time.sleep(1)


def fetch(client: httpx.Client, path: str, gzip: bool) -> dict[str, float]:
    headers = {"Accept": "text/html", "Accept-Encoding": "gzip" if gzip else "identity"}
    started = time.perf_counter()
    with client.stream("GET", path, headers=headers) as response:
        raw = b"".join(response.iter_raw())
        waited = (time.perf_counter() - started) * 1000
        response.raise_for_status()
        head = sum(len(k) + len(v) + 4 for k, v in response.headers.raw) + len("HTTP/1.1 200 OK\r\n\r\n")
        timing = response.headers.get("server-timing", "app;dur=nan").split("dur=")[1]
        compressed = response.headers.get("content-encoding") == "gzip"
    return {
        "wire_bytes": head + len(raw),
        "body_bytes": len(zlib.decompress(raw, 31)) if compressed else len(raw),
        "server_ms": float(timing),
        "client_ms": waited,
    }


def medians(samples: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(s[k] for s in samples), 1) for k in samples[0]}


REGISTERED = "registered.json"
"""Marks a data dir whose endpoints are all registered (and says how many, and how long it took)."""


def registered_data(
    args: argparse.Namespace, tmp: Path, archive: Path, env: dict[str, str]
) -> tuple[Path, float]:
    """A data dir with ``--endpoints`` endpoints InService and no history: made here, or copied from
    ``--registered`` when a run before made it."""
    cached = args.registered
    if cached is not None and (cached / REGISTERED).exists():
        marker = json.loads((cached / REGISTERED).read_text())
        if marker["endpoints"] == args.endpoints:
            return cached, float(marker["register_s"])
    target = cached or tmp / "registered"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    server = ColdbrewServer(target / "data", env=env).start()
    try:
        register_s = register(server, archive, args.endpoints, args.threads)
    finally:
        server.stop()
    (target / REGISTERED).write_text(json.dumps({"endpoints": args.endpoints, "register_s": register_s}))
    return target, register_s


PLAN = (
    # (name, path, gzip, how many of ``--requests``)
    ("endpoints_page_gzip", "/ui", True, 1.0),
    ("endpoints_page_uncompressed", "/ui", False, 0.25),
    ("api_endpoints_json_gzip", "/ui/api/endpoints", True, 0.25),
    ("cost_page_7_days_gzip", "/ui/cost", True, 0.5),
    ("cost_page_31_days_gzip", "/ui/cost?days=31", True, 0.25),
)


def measure(clients: list[httpx.Client], requests: int) -> list[dict[str, Any]]:
    """Each client's figures, its requests interleaved with the others' (one request of each in
    turn), so a shared machine's load falls on every checkout alike."""
    samples: list[dict[str, list[dict[str, float]]]] = [{} for _ in clients]
    # The first loads: the endpoints page prices the month up to the current hour, the cost page
    # its days before today (once; after, only what the meter writes again).
    for i, client in enumerate(clients):
        samples[i]["endpoints_page_first_load"] = [fetch(client, "/ui", gzip=True)]
        samples[i]["cost_page_first_load"] = [fetch(client, "/ui/cost", gzip=True)]
    for name, path, gzip, share in PLAN:
        for _ in range(max(3, int(requests * share))):
            for i, client in enumerate(clients):
                samples[i].setdefault(name, []).append(fetch(client, path, gzip=gzip))
    out = []
    for i, client in enumerate(clients):
        result: dict[str, Any] = {name: medians(found) for name, found in samples[i].items()}
        result["static_first_visit_wire_bytes"] = {
            p: fetch(client, p, gzip=True)["wire_bytes"] for p in STATIC
        }
        result["first_visit_total_kb"] = round(
            (
                result["endpoints_page_gzip"]["wire_bytes"]
                + sum(result["static_first_visit_wire_bytes"].values())
            )
            / 1024,
            1,
        )
        out.append(result)
    return out


def agrees_with_cost_report(client: httpx.Client, db: Path, endpoints: int) -> bool:
    """The page's month to date equals ``coldbrew cost``'s (read after it, so within the minute's
    new usage: none here, the history is all written before the server starts)."""
    listed = client.get("/ui/api/endpoints").json()
    assert len(listed["rows"]) == endpoints, len(listed["rows"])
    now = time.time()
    month = dt.datetime.fromtimestamp(now, dt.UTC).replace(day=1, hour=0, minute=0, second=0).timestamp()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    report = cost_report(conn, load_prices(), None, month, now)
    conn.close()
    expected = {e["EndpointName"]: e["Cost"] for e in report["Endpoints"]}
    # Serverless endpoints without ProvisionedConcurrency: their cost is the history's alone.
    return all(abs((r["cost_month"] or 0.0) - expected.get(r["name"], 0.0)) < 1e-6 for r in listed["rows"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--busy",
        type=int,
        default=1000,
        help="endpoints invoked in every minute of the last hour (default: all)",
    )
    parser.add_argument("--registered", type=Path, help="keep (or reuse) the registered data dir here")
    parser.add_argument(
        "--repo",
        type=Path,
        action="append",
        help="serve from this checkout (repeatable: each in turn on the same data); default this one",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-bench-ui-"))
    archive, _ = sklearn_archive(tmp / "model.tar.gz")
    env = {
        "COLDBREW_MAX_ENDPOINTS": str(args.endpoints + 10),
        "COLDBREW_IDLE_TIMEOUT_S": "1",
        "COLDBREW_LOGS_ECHO": "false",
    }
    source, register_s = registered_data(args, tmp, archive, env)
    repos = [r.resolve() for r in args.repo] if args.repo else [Path(__file__).resolve().parent.parent]
    report: dict[str, Any] = {
        "endpoints": args.endpoints,
        "busy_endpoints": args.busy,
        "register_s": round(register_s, 1),
        "requests": args.requests,
        "aims": {"transferred_kb_under": 300, "server_ms_under": 200},
        "load_average_at_start": os.getloadavg(),
        "checkouts": {},
    }
    # Every checkout serves at once, each on its own copy of the same data, and is measured in turn.
    servers, datas = [], []
    try:
        for i, repo in enumerate(repos):
            data = tmp / f"run-{i}" / "data"
            shutil.copytree(source / "data", data)
            report["meter_rows_written"] = write_history(
                data / "coldbrew.db", args.endpoints, args.busy, int(time.time())
            )
            servers.append(ColdbrewServer(data, env=env, repo=repo).start(timeout=300))
            datas.append(data)
        clients = [httpx.Client(base_url=server.url, timeout=300) for server in servers]
        for client in clients:
            settle(client, args.endpoints)
        report["load_average_measuring"] = os.getloadavg()
        results = measure(clients, args.requests)
        report["load_average_after"] = os.getloadavg()
        for repo, client, data, result in zip(repos, clients, datas, results, strict=True):
            listed = client.get("/ui/api/endpoints").json()
            result["endpoints_with_latency_percentiles"] = sum(
                1 for r in listed["rows"] if r["p99_us"] is not None
            )
            result["month_equals_cost_report"] = agrees_with_cost_report(
                client, data / "coldbrew.db", args.endpoints
            )
            page_m = result["endpoints_page_gzip"]
            result["meets_aims"] = (
                result["first_visit_total_kb"] < 300
                and page_m["server_ms"] < 200
                and page_m["client_ms"] < 200
            )
            report["checkouts"][str(repo)] = result
            client.close()
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
