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
after), and ``/ui/api/endpoints`` (the same data as JSON).

    python bench/ui.py [--endpoints 1000] [--busy 1000] [--requests 20] [--threads 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
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
    # In time order, every endpoint's row of a minute (or hour) together, as the meter writes them.
    hours = list(range(month, this_minute - 3600, 3600))
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
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-bench-ui-"))
    archive, _ = sklearn_archive(tmp / "model.tar.gz")
    env = {
        "COLDBREW_MAX_ENDPOINTS": str(args.endpoints + 10),
        "COLDBREW_IDLE_TIMEOUT_S": "1",
        "COLDBREW_LOGS_ECHO": "false",
    }
    server = ColdbrewServer(tmp / "data", env=env).start()
    try:
        register_s = register(server, archive, args.endpoints, args.threads)
    finally:
        server.stop()
    rows = write_history(tmp / "data" / "coldbrew.db", args.endpoints, args.busy, int(time.time()))
    server = ColdbrewServer(tmp / "data", env=env).start(timeout=300)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            settle(client, args.endpoints)
            listed = client.get("/ui/api/endpoints").json()
            assert len(listed["rows"]) == args.endpoints, len(listed["rows"])
            with_latency = sum(1 for r in listed["rows"] if r["p99_us"] is not None)
            # The first load also prices the month up to the current hour (once an hour after).
            first = fetch(client, "/ui", gzip=True)
            page = [fetch(client, "/ui", gzip=True) for _ in range(args.requests)]
            plain = [fetch(client, "/ui", gzip=False) for _ in range(max(3, args.requests // 4))]
            api = [fetch(client, "/ui/api/endpoints", gzip=True) for _ in range(max(3, args.requests // 4))]
            static = {path: fetch(client, path, gzip=True)["wire_bytes"] for path in STATIC}
        page_m = medians(page)
        report: dict[str, Any] = {
            "endpoints": args.endpoints,
            "busy_endpoints": args.busy,
            "endpoints_with_latency_percentiles": with_latency,
            "meter_rows_written": rows,
            "register_s": round(register_s, 1),
            "requests": args.requests,
            "endpoints_page_first_load": first,
            "endpoints_page_gzip": page_m,
            "endpoints_page_uncompressed": medians(plain),
            "api_endpoints_json_gzip": medians(api),
            "static_first_visit_wire_bytes": static,
            "first_visit_total_kb": round((page_m["wire_bytes"] + sum(static.values())) / 1024, 1),
            "aims": {"transferred_kb_under": 300, "server_ms_under": 200},
        }
        report["meets_aims"] = (
            report["first_visit_total_kb"] < 300 and page_m["server_ms"] < 200 and page_m["client_ms"] < 200
        )
        print(json.dumps(report, indent=2))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
