"""CloudWatch benchmark (issue 11, point 7): GetMetricStatistics over a week of per-minute
aggregates for 100 endpoints (aim: < 50 ms).

The aggregates are written the way the meter writes them: ``MinuteAggregate`` rows built with
``add_record``/``add_sample`` from synthetic invocations, upserted with the meter's SQL into a real
store (``coldbrew.db`` migrated by ``Store``), one row per endpoint and minute for 7 days (1,008,000
rows, no raw records: every percentile comes from the histograms). Then a real ``coldbrew serve``
on that data dir answers boto3 (its default protocol, awsJson1_0) with only ``AWS_ENDPOINT_URL``
set; each request names a random endpoint. Also timed in-process (the operation alone, no HTTP),
and ListMetrics over the whole store.

    python bench/cloudwatch.py [--endpoints 100] [--days 7] [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from coldbrew.cloudwatch.operations import get_metric_statistics  # noqa: E402
from coldbrew.control.store import Store  # noqa: E402
from coldbrew.metering.aggregate import MinuteAggregate, VariantSample, register_sql_functions, upsert_sql  # noqa: E402
from coldbrew.metering.records import MeterRecord  # noqa: E402
from tests.support import ColdbrewServer  # noqa: E402

VARIANT = "AllTraffic"


def templates(rng: random.Random, count: int = 32) -> list[MinuteAggregate]:
    """Minutes of a busy serverless variant: 5 to 60 invocations, lognormal latencies, samples."""
    out = []
    for _ in range(count):
        agg = MinuteAggregate()
        for i in range(rng.randint(5, 60)):
            latency = int(rng.lognormvariate(10.5, 0.6))
            cold = rng.random() < 0.02
            status, code = (400, "ThrottlingException") if rng.random() < 0.01 else (200, None)
            agg.add_record(
                MeterRecord("e", VARIANT, 0.0, latency if status == 200 else 0, 800 + i, cold,
                            400_000 if cold else 0, 2048, True, 100, 20, status, code)
            )  # fmt: skip
        for _ in range(120):  # a sample every 0.5 s
            sample = VariantSample("e", VARIANT, True, 2048, 5, 2, rng.randint(0, 2), 300 * 2**20, 4096)
            agg.add_sample(sample, 0.5)
        out.append(agg)
    return out


def write_week(db: Path, endpoints: int, days: int, now: int) -> tuple[int, float]:
    Store(db).close()  # migrated, as a server leaves it
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    register_sql_functions(conn)
    sql = upsert_sql()
    rng = random.Random(11)
    minutes = days * 1440
    first = now - minutes * 60
    started = time.perf_counter()
    rows = 0
    for e in range(endpoints):
        pool = templates(rng)
        batch = [
            (f"endpoint-{e:03d}", VARIANT, first + m * 60, *pool[(m * 7 + e) % len(pool)].row())
            for m in range(minutes)
        ]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, batch)
        conn.execute("COMMIT")
        rows += len(batch)
    conn.close()
    return rows, time.perf_counter() - started


def timed(call: Callable[[], Any], n: int) -> dict[str, float]:
    call()  # warm
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p99_ms": round(samples[min(len(samples) - 1, int(0.99 * len(samples)))], 2),
        "max_ms": round(samples[-1], 2),
        "requests": n,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-bench-cw-"))
    data = tmp / "data"
    data.mkdir()
    now = int(time.time()) // 60 * 60
    rows, write_s = write_week(data / "coldbrew.db", args.endpoints, args.days, now)
    rng = random.Random(5)
    week = {"StartTime": now - args.days * 86400, "EndTime": now}

    def request(period: int, **stats: Any) -> dict[str, Any]:
        name = f"endpoint-{rng.randrange(args.endpoints):03d}"
        return {
            "Namespace": "AWS/SageMaker",
            "MetricName": "ModelLatency",
            "Dimensions": [
                {"Name": "EndpointName", "Value": name},
                {"Name": "VariantName", "Value": VARIANT},
            ],
            "Period": period,
            **week,
            **stats,
        }

    five = {"Statistics": ["SampleCount", "Average", "Sum", "Minimum", "Maximum"]}
    pct = {"ExtendedStatistics": ["p50", "p99", "p99.9"]}
    conn = sqlite3.connect(f"file:{data / 'coldbrew.db'}?mode=ro", uri=True)
    in_process = {
        "statistics_hourly": timed(
            lambda: get_metric_statistics(conn, request(3600, **five), now), args.requests
        ),
        "statistics_10min": timed(
            lambda: get_metric_statistics(conn, request(600, **five), now), args.requests
        ),
        "percentiles_hourly": timed(
            lambda: get_metric_statistics(conn, request(3600, **pct), now), args.requests
        ),
    }
    points = len(get_metric_statistics(conn, request(3600, **five), now)["Datapoints"])
    conn.close()

    server = ColdbrewServer(data).start()
    try:
        os.environ["AWS_ENDPOINT_URL"] = server.url
        cw = boto3.client(
            "cloudwatch", region_name="us-east-1", aws_access_key_id="any", aws_secret_access_key="any",
            config=Config(retries={"total_max_attempts": 1}),
        )  # fmt: skip
        through_server = {
            "statistics_hourly": timed(
                lambda: cw.get_metric_statistics(**request(3600, **five)), args.requests
            ),
            "statistics_10min": timed(
                lambda: cw.get_metric_statistics(**request(600, **five)), args.requests
            ),
            "percentiles_hourly": timed(
                lambda: cw.get_metric_statistics(**request(3600, **pct)), args.requests
            ),
            "list_metrics_first_page": timed(lambda: cw.list_metrics(), 20),
        }
    finally:
        server.stop()
    print(
        json.dumps(
            {
                "benchmark": "GetMetricStatistics over a week of per-minute aggregates",
                "endpoints": args.endpoints,
                "days": args.days,
                "aggregate_rows": rows,
                "write_s": round(write_s, 1),
                "datapoints_per_hourly_request": points,
                "aim_ms": 50,
                "boto3_through_coldbrew_serve": through_server,
                "operation_in_process": in_process,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
