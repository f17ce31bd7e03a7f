"""``coldbrew metrics`` and ``coldbrew cost``: argument handling and output.

``metrics`` and ``cost`` read the SQLite store under ``--data-dir`` (read-only; see
:mod:`coldbrew.metering.query`), so they work whether or not a server is running.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from coldbrew.metering.prices import load_prices
from coldbrew.metering.query import (
    MeterQueryError,
    cost_report,
    metrics_report,
    open_readonly,
    parse_duration,
    parse_since,
    transform_jobs_report,
)
from coldbrew.settings import Settings
from coldbrew.terminal import console, print_json


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        return Path(args.data_dir)
    from coldbrew.settings import Settings

    return Settings().data_dir


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def metrics_command(args: argparse.Namespace) -> int:
    try:
        now = time.time()
        conn = open_readonly(_data_dir(args) / "coldbrew.db")
        report = metrics_report(
            conn, args.endpoint.lower(), parse_since(args.since, now), parse_duration(args.period), now
        )
    except MeterQueryError as exc:
        print(f"coldbrew: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print_json(report)
        return 0
    from rich.table import Table

    table = Table(
        "time (UTC)",
        "variant",
        "Invocations",
        "4XX",
        "5XX",
        "ModelErrors",
        "ModelLatency µs",
        "OverheadLatency µs",
        "ModelSetupTime µs",
        "MemoryUtil %",
        "ConcurrencyUtil",
        title=f"{args.endpoint}, {report['Period']} s periods since {report['Since']}",
    )
    for p in report["Datapoints"]:
        table.add_row(
            p["Timestamp"],
            p["VariantName"],
            _fmt(p["Invocations"]),
            _fmt(p["Invocation4XXErrors"]),
            _fmt(p["Invocation5XXErrors"]),
            _fmt(p["InvocationModelErrors"]),
            _fmt(p["ModelLatency"]["Average"]),
            _fmt(p["OverheadLatency"]["Average"]),
            f"{_fmt(p['ModelSetupTime']['Average'])} ({p['ModelSetupTime']['SampleCount']})",
            _fmt(p["MemoryUtilization"]["Average"], 1),
            _fmt(p["ServerlessConcurrentExecutionsUtilization"]["Maximum"], 2),
        )
    console().print(table)
    return 0


def cost_command(args: argparse.Namespace) -> int:
    try:
        now = time.time()
        prices = load_prices(args.prices)
        conn = open_readonly(_data_dir(args) / "coldbrew.db")
        since = parse_since(args.since, now)
        report = cost_report(conn, prices, args.endpoint.lower() if args.endpoint else None, since, now)
        # ENDPOINT may name a transform job instead: it is looked up among both.
        report["TransformJobs"] = transform_jobs_report(conn, prices, since, now, args.endpoint)
    except (MeterQueryError, OSError, ValueError) as exc:
        print(f"coldbrew: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print_json(report)
        return 0
    out = console()
    jobs = report["TransformJobs"]
    if report["Endpoints"] or not jobs:
        _endpoints_table(report, out)
    if jobs:
        _jobs_table(jobs, report, out)
    note = prices.region_note(Settings().region)
    if note:
        out.print(f"note: {note}")
    return 0


def _endpoints_table(report: dict[str, Any], out: Any) -> None:
    from rich.table import Table

    table = Table(
        "endpoint",
        "hours",
        "invocations",
        "GB-s",
        "data GB",
        "cost",
        "per 1M",
        "instance alternative",
        "break-even /h",
        "now /h",
        title=f"Cost in {report['Currency']}, prices for {report['PriceRegion']} ({report['PriceDate']})",
    )
    for e in report["Endpoints"]:
        alt = e.get("InstanceAlternative")
        table.add_row(
            e["EndpointName"],
            _fmt(e["Hours"], 2),
            _fmt(e["Invocations"]),
            _fmt(e["GBSeconds"], 1),
            _fmt(e["DataProcessedGB"], 4),
            _fmt(e["Cost"], 4),
            _fmt(e["CostPerMillionInvocations"], 2),
            "-" if alt is None else f"{alt['InstanceType']}: {alt['Cost']:,.4f}",
            _fmt(e.get("BreakEvenInvocationsPerHour"), 0),
            _fmt(e.get("InvocationsPerHour"), 1),
        )
    out.print(table)
    for e in report["Endpoints"]:
        if e.get("InstanceAlternative"):
            out.print(f"{e['EndpointName']}: assumes {e['InstanceAlternative']['Assumption']}.")


def _jobs_table(jobs: list[dict[str, Any]], report: dict[str, Any], out: Any) -> None:
    from rich.table import Table

    total = sum(j["Cost"] or 0.0 for j in jobs)
    table = Table(
        "transform job",
        "status",
        "instances",
        "started (UTC)",
        "billed s",
        "cost",
        title=f"Transform jobs, priced as Batch Transform: {total:,.4f} {report['Currency']}",
    )
    for j in jobs:
        table.add_row(
            j["TransformJobName"],
            j["TransformJobStatus"],
            f"{j['InstanceCount']} x {j['InstanceType']}",
            j["TransformStartTime"] or "-",
            _fmt(j["BilledSeconds"]),
            _fmt(j["Cost"], 4),
        )
    out.print(table)
    for j in jobs:
        if j.get("PriceNote"):
            out.print(f"{j['TransformJobName']}: {j['PriceNote']}.")


def add_commands(commands: Any) -> None:
    metrics = commands.add_parser("metrics", help="CloudWatch-style metrics of an endpoint, from the store")
    metrics.add_argument("endpoint", help="the endpoint's name")
    metrics.add_argument("--since", default="1h", help="how far back: 15m, 1h, 7d, an ISO time (default 1h)")
    metrics.add_argument("--period", default="1m", help="datapoint period, whole minutes (default 1m)")
    metrics.add_argument("--data-dir", type=Path, help="the server's data dir (COLDBREW_DATA_DIR)")
    metrics.add_argument("--json", action="store_true", help="JSON for programs instead of a table")
    metrics.set_defaults(func=metrics_command)

    cost = commands.add_parser(
        "cost",
        help="what endpoints cost on SageMaker and on always-on instances; transform jobs on Batch Transform",
    )
    cost.add_argument("endpoint", nargs="?", help="one endpoint or transform job (default: all)")
    cost.add_argument("--since", help="from when: 24h, 30d, an ISO time (default: all metered history)")
    cost.add_argument("--prices", help="your own price file over the shipped one (COLDBREW_PRICES)")
    cost.add_argument("--data-dir", type=Path, help="the server's data dir (COLDBREW_DATA_DIR)")
    cost.add_argument("--json", action="store_true", help="JSON for programs instead of a table")
    cost.set_defaults(func=cost_command)
