"""Reading the meter back for ``coldbrew metrics`` and ``coldbrew cost``.

The CLI reads the SQLite file under ``--data-dir`` directly, read-only: WAL lets it read while a
server writes, it works when no server runs, and it needs no credentials or open port. What it
cannot see is the last flush interval (0.5 s) of records still in the server's memory.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from coldbrew.metering.batch_cost import billed_seconds, transform_job_cost
from coldbrew.metering.cost import (
    Usage,
    breakeven_per_hour,
    instance_cost,
    per_million,
    serverless_cost,
    serverless_provisioned_concurrency_cost,
)
from coldbrew.metering.prices import DATA_GB, PriceTable
from coldbrew.serving.instances import instance_type

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class MeterQueryError(Exception):
    """Told to the user as is."""


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise MeterQueryError(f"{text!r} is not a duration; write e.g. 90s, 5m, 1h, 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_since(text: str | None, now: float) -> float | None:
    """``1h`` (ago), an ISO 8601 time, or Unix seconds."""
    if text is None:
        return None
    if _DURATION.match(text.strip().lower()):
        return now - parse_duration(text)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise MeterQueryError(
            f"--since {text!r}: give a duration (1h, 7d), an ISO time or Unix seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def open_readonly(db_path: Path) -> sqlite3.Connection:
    if not db_path.exists():
        raise MeterQueryError(f"no coldbrew database at {db_path}; pass the server's --data-dir")
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meter_minutes" not in tables:
        raise MeterQueryError(
            f"{db_path} has no metering tables yet; start this version of coldbrew on it once"
        )
    return conn


class RowLike(Protocol):
    """A row read by column name: ``sqlite3.Row`` or a dict."""

    def __getitem__(self, key: str, /) -> Any: ...


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- coldbrew metrics -----------------------------------------------------------------------------


def metrics_report(
    conn: sqlite3.Connection, endpoint: str, since: float | None, period_s: float, now: float | None = None
) -> dict[str, Any]:
    """CloudWatch-style datapoints per variant and period (a period is whole minutes)."""
    now = time.time() if now is None else now
    period = max(60, int(period_s) // 60 * 60)
    since = now - 3600 if since is None else since
    start = int(since // period * period)
    rows = conn.execute(
        "SELECT * FROM meter_minutes WHERE endpoint = ? AND minute >= ? ORDER BY variant, minute",
        [endpoint, start],
    ).fetchall()
    buckets: dict[tuple[str, int], list[sqlite3.Row]] = defaultdict(list)
    for row in rows:
        buckets[(row["variant"], (row["minute"] - start) // period * period + start)].append(row)
    datapoints = []
    for (variant, at), group in sorted(buckets.items()):
        inv = sum(r["invocations"] for r in group)
        refused = sum(r["errors_4xx"] + r["errors_5xx"] for r in group)
        served = max(0, inv - refused)
        cold = sum(r["cold_starts"] for r in group)
        samples = sum(r["samples"] for r in group)

        def avg(column: str, count: int, rows: list[sqlite3.Row] = group) -> float | None:
            return None if count == 0 else sum(r[column] for r in rows) / count

        datapoints.append(
            {
                "Timestamp": _iso(at),
                "VariantName": variant,
                "Invocations": inv,
                "Invocation4XXErrors": sum(r["errors_4xx"] for r in group),
                "Invocation5XXErrors": sum(r["errors_5xx"] for r in group),
                "InvocationModelErrors": sum(r["model_errors"] for r in group),
                "ModelLatency": {
                    "Average": avg("model_latency_us", served),
                    "Maximum": max(r["model_latency_max_us"] for r in group),
                    "Unit": "Microseconds",
                },
                "OverheadLatency": {
                    "Average": avg("overhead_latency_us", served),
                    "Maximum": max(r["overhead_latency_max_us"] for r in group),
                    "Unit": "Microseconds",
                },
                "ModelSetupTime": {
                    "Average": avg("setup_us", cold),
                    "Maximum": max(r["setup_max_us"] for r in group),
                    "SampleCount": cold,
                    "Unit": "Microseconds",
                },
                "MemoryUtilization": {
                    "Average": avg("memory_utilization_sum", sum(r["memory_samples"] for r in group)),
                    "Maximum": max(r["memory_utilization_max"] for r in group),
                    "Unit": "Percent",
                },
                "ServerlessConcurrentExecutionsUtilization": {
                    "Average": avg("concurrency_utilization_sum", samples),
                    "Maximum": max(r["concurrency_utilization_max"] for r in group),
                    "Unit": "None",
                },
                "HeldGBSeconds": sum(r["held_mb_s"] for r in group) / 1024,
                "ColdStarts": cold,
                "EnvironmentStarts": sum(r["environment_starts"] for r in group),
            }
        )
    return {"EndpointName": endpoint, "Since": _iso(since), "Period": period, "Datapoints": datapoints}


# --- coldbrew cost ---------------------------------------------------------------------------------


def _endpoint_rows(conn: sqlite3.Connection) -> dict[str, sqlite3.Row]:
    return {
        r["name"].lower(): r
        for r in conn.execute("SELECT name, created_at, modified_at, deployment FROM endpoints")
    }


def endpoint_creation_times(conn: sqlite3.Connection) -> dict[str, float]:
    """When each endpoint in the store was created (Unix seconds), by lower-case name."""
    return {name: float(row["created_at"]) for name, row in _endpoint_rows(conn).items()}


def _deployment(row: RowLike) -> dict[str, Any]:
    deployment = row["deployment"]
    return json.loads(deployment) if isinstance(deployment, str) else deployment


def _deployed_variants(row: RowLike | None) -> dict[str, dict[str, Any]]:
    if row is None:
        return {}
    config = _deployment(row).get("Config", {})
    return {v["VariantName"]: v for v in config.get("ProductionVariants", [])}


def _is_async(row: RowLike | None) -> bool:
    if row is None:
        return False
    return bool(_deployment(row).get("Config", {}).get("AsyncInferenceConfig"))


def cost_report(
    conn: sqlite3.Connection,
    prices: PriceTable,
    endpoint: str | None,
    since: float | None,
    now: float | None = None,
) -> dict[str, Any]:
    """Cost per endpoint over [since, now], with the always-on instance alternative and break-even.

    Provisioned variants (and ProvisionedConcurrency) are priced by the hours they existed: from
    the endpoint's creation time in the store, at its current configuration. An endpoint deleted
    since is priced from the minutes its environments were sampled. The instances of an
    asynchronous endpoint start with its queue and scale to zero, so they are priced by the
    instance-hours they were held (memory held over the instance type's memory).
    """
    now = time.time() if now is None else now
    return price_usage(usage_rows(conn, endpoint, since), _endpoint_rows(conn), prices, endpoint, since, now)


USAGE_COLUMNS = (
    "endpoint", "variant", "serverless", "memory_mb", "invocations", "billed_mb_ms", "bytes_in",
    "bytes_out", "cold_starts", "first_minute", "sampled_minutes", "held_mb_s",
)  # fmt: skip
"""What :func:`price_usage` takes of each endpoint variant's minutes over a period (``usage_rows``)."""


def usage_rows(conn: sqlite3.Connection, endpoint: str | None, since: float | None) -> list[sqlite3.Row]:
    """Each endpoint variant's minutes from ``since`` on, summed (``USAGE_COLUMNS``)."""
    params: list[Any] = [-1 if since is None else int(since // 60 * 60)]
    where = "minute >= ?"
    if endpoint is not None:
        where += " AND endpoint = ?"
        params.append(endpoint)
    return conn.execute(
        f"SELECT endpoint, variant, max(serverless) AS serverless, max(memory_mb) AS memory_mb, "
        f"sum(invocations) AS invocations, sum(billed_mb_ms) AS billed_mb_ms, sum(bytes_in) AS bytes_in, "
        f"sum(bytes_out) AS bytes_out, sum(cold_starts) AS cold_starts, min(minute) AS first_minute, "
        f"sum(samples > 0) AS sampled_minutes, sum(held_mb_s) AS held_mb_s "
        f"FROM meter_minutes WHERE {where} GROUP BY endpoint, variant ORDER BY endpoint, variant",
        params,
    ).fetchall()


def price_usage(
    rows: Iterable[RowLike],
    stored: Mapping[str, RowLike],
    prices: PriceTable,
    endpoint: str | None,
    since: float | None,
    now: float,
) -> dict[str, Any]:
    """:func:`cost_report` of ``rows`` (``usage_rows``' shape and order), with ``stored`` the
    store's endpoints by lower-case name (``created_at``, and ``deployment`` as stored or parsed):
    for readers that sum the minutes themselves."""
    by_endpoint: dict[str, list[RowLike]] = defaultdict(list)
    for row in rows:
        by_endpoint[row["endpoint"]].append(row)
    if endpoint is not None and endpoint.lower() in stored and endpoint not in by_endpoint:
        by_endpoint[endpoint] = []
    reports = []
    for name, variants in sorted(by_endpoint.items()):
        store_row = stored.get(name.lower())
        deployed = _deployed_variants(store_row)
        first = min([r["first_minute"] for r in variants] or [now])
        start = store_row["created_at"] if store_row is not None else first
        if since is not None:
            start = max(start, since)
        hours = max(0.0, now - start) / 3600
        lines = []
        serverless_total = provisioned_total = 0.0
        invocations = serverless_invocations = 0
        gb_seconds = 0.0
        bytes_in = bytes_out = 0
        largest_memory = 0
        for v in variants:
            usage = Usage(
                int(v["invocations"]),
                v["billed_mb_ms"] / 1024 / 1000,
                int(v["bytes_in"]),
                int(v["bytes_out"]),
            )
            invocations += usage.invocations
            bytes_in += usage.bytes_in
            bytes_out += usage.bytes_out
            line: dict[str, Any] = {
                "VariantName": v["variant"],
                "Invocations": usage.invocations,
                "MemorySizeInMB": v["memory_mb"],
                "ColdStarts": v["cold_starts"],
                "HeldGBSeconds": v["held_mb_s"] / 1024,
                "DataProcessedGB": (usage.bytes_in + usage.bytes_out) / DATA_GB,
            }
            spec = deployed.get(v["variant"], {})
            if v["serverless"]:
                cost = serverless_cost(usage, prices)
                provisioned = int((spec.get("ServerlessConfig") or {}).get("ProvisionedConcurrency", 0))
                if provisioned:
                    cost += serverless_provisioned_concurrency_cost(
                        provisioned, v["memory_mb"], hours, prices
                    )
                line.update(Kind="serverless", GBSeconds=usage.gb_seconds, ProvisionedConcurrency=provisioned)
                gb_seconds += usage.gb_seconds
                serverless_invocations += usage.invocations
                largest_memory = max(largest_memory, int(v["memory_mb"]))
                serverless_total += cost
            else:
                itype = spec.get("InstanceType") or _instance_for_memory(v["memory_mb"])
                count = int(spec.get("InitialInstanceCount", 1))
                variant_hours = hours if store_row is not None else v["sampled_minutes"] / 60
                if _is_async(store_row) and v["memory_mb"]:
                    variant_hours, count = v["held_mb_s"] / v["memory_mb"] / 3600, 1
                cost = instance_cost(itype, variant_hours, prices, count)
                line.update(Kind="provisioned", InstanceType=itype, InstanceCount=count, Hours=variant_hours)
                provisioned_total += cost
            line["Cost"] = cost
            lines.append(line)
        total = serverless_total + provisioned_total
        report: dict[str, Any] = {
            "EndpointName": name,
            "Start": _iso(start),
            "End": _iso(now),
            "Hours": hours,
            "Invocations": invocations,
            "GBSeconds": gb_seconds,
            "DataProcessedGB": (bytes_in + bytes_out) / DATA_GB,
            "Cost": total,
            "CostPerMillionInvocations": per_million(total, invocations),
            "Variants": lines,
        }
        if largest_memory:
            alternative = prices.smallest_instance(largest_memory)
            hourly = prices.instance_hourly(alternative)
            cost_per_invocation = serverless_total / serverless_invocations if serverless_invocations else 0.0
            report["InstanceAlternative"] = {
                "InstanceType": alternative,
                "HourlyPrice": hourly,
                "Cost": instance_cost(alternative, hours, prices),
                "Assumption": (
                    f"one always-on {alternative}, the cheapest priced type with at least "
                    f"{largest_memory} MB, serves the same traffic over the same {hours:.2f} h"
                ),
            }
            report["BreakEvenInvocationsPerHour"] = breakeven_per_hour(hourly, cost_per_invocation)
            report["InvocationsPerHour"] = serverless_invocations / hours if hours > 0 else None
        reports.append(report)
    return {
        "Currency": prices.currency,
        "PriceRegion": prices.region,
        "PriceDate": prices.date,
        "Endpoints": reports,
    }


_FINISHED_JOB = ("Completed", "Failed", "Stopped")


def transform_jobs_report(
    conn: sqlite3.Connection,
    prices: PriceTable,
    since: float | None,
    now: float | None = None,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """Batch transform jobs over [since, now], each priced as Batch Transform for its instance-seconds.

    A job runs from ``started_at`` to ``ended_at`` (now while it runs), on ``instance_count``
    instances; the seconds of that span inside the period are what it is billed for in the period.
    A job that has not started is listed (it was asked for in the period) at no cost. A store older
    than the transform_jobs table has no jobs.
    """
    now = time.time() if now is None else now
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "transform_jobs" not in tables:
        return []
    sql = (
        "SELECT name, status, instance_type, instance_count, started_at, ended_at, created_at, "
        "modified_at FROM transform_jobs"
    )
    params: list[Any] = []
    if name is not None:
        sql += " WHERE name_key = ?"
        params.append(name.lower())
    jobs = []
    for row in conn.execute(sql + " ORDER BY created_at, name", params).fetchall():
        started, ended = row["started_at"], row["ended_at"]
        if ended is None and started is not None:
            # A job the server no longer runs but never stamped (a crash between the two writes)
            # is billed to its last change, not to a "now" that keeps growing.
            ended = row["modified_at"] if row["status"] in _FINISHED_JOB else now
        if started is None:
            if since is not None and row["created_at"] < since:
                continue
            job_s = period_s = 0.0
        else:
            if since is not None and ended < since:
                continue
            job_s = max(0.0, ended - started)
            period_s = max(0.0, ended - (started if since is None else max(started, since)))
        count = int(row["instance_count"])
        job: dict[str, Any] = {
            "TransformJobName": row["name"],
            "TransformJobStatus": row["status"],
            "InstanceType": row["instance_type"],
            "InstanceCount": count,
            "TransformStartTime": None if started is None else _iso(started),
            "TransformEndTime": None if row["ended_at"] is None else _iso(row["ended_at"]),
            "JobSeconds": job_s,
            "BilledSeconds": billed_seconds(period_s),
        }
        try:
            job["HourlyPrice"] = prices.batch_transform_hourly(row["instance_type"])
            job["Cost"] = transform_job_cost(row["instance_type"], count, period_s, prices)
        except KeyError as exc:
            job.update(HourlyPrice=None, Cost=None, PriceNote=exc.args[0])
        jobs.append(job)
    return jobs


def _instance_for_memory(memory_mb: int) -> str:
    for name in ("ml.t2.medium", "ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge"):
        if instance_type(name).memory_mb >= memory_mb:
            return name
    return "ml.m5.4xlarge"
