"""``coldbrew tune``: argument handling, progress and the summary table.

Like ``coldbrew endpoints``, it speaks to a running server through the SageMaker API (boto3, the
standard AWS credentials, so it works with auth on) and reads the meter from ``/metrics``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from coldbrew.server_client import DEFAULT_URL, server_client, signed_get
from coldbrew.terminal import console
from coldbrew.tune.measure import Payload
from coldbrew.tune.meter import MeterFigures, parse_meter
from coldbrew.tune.run import ConfigResult, TuneResult, tune

MEMORY_SIZES = (1024, 2048, 3072, 4096, 5120, 6144)
"""MemorySizeInMB values SageMaker Serverless accepts."""


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "tune",
        help="deploy a model at several memory sizes, measure latency and cost, recommend one",
        description=(
            "Deploys MODEL (an existing Model) on one serverless endpoint per memory size, measures "
            "the cold start (the first invocation after deploy), warm p50/p90/p99 and throughput at "
            "each concurrency level, prices each size with coldbrew's price table and recommends the "
            "cheapest that meets --latency-target-ms. Every endpoint it makes is deleted at the end."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="an existing Model (CreateModel)")
    parser.add_argument("--payload", type=Path, required=True, help="request body to send (a file)")
    parser.add_argument(
        "--content-type", default="text/csv", help="the payload's ContentType (default text/csv)"
    )
    parser.add_argument(
        "--memory",
        type=int,
        nargs="+",
        default=[1024, 2048, 3072],
        help="MemorySizeInMB values (default 1024 2048 3072)",
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 4], help="requests in flight at once (default 1 4)"
    )
    parser.add_argument(
        "--invocations",
        type=int,
        default=100,
        help="measured invocations per size and concurrency (default 100)",
    )
    parser.add_argument("--latency-target-ms", type=float, help="warm p99 a recommended size must meet")
    parser.add_argument(
        "--rate",
        type=float,
        default=1_000_000,
        help="invocations a month, for the monthly cost (default 1,000,000)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("tune-report"), help="report directory (default ./tune-report)"
    )
    parser.add_argument("--prices", help="a price table file over the shipped one (COLDBREW_PRICES)")
    parser.add_argument("--url", help=f"the server (COLDBREW_URL, default {DEFAULT_URL})")
    parser.set_defaults(func=tune_command)


def _check(args: argparse.Namespace) -> str | None:
    bad = [m for m in args.memory if m not in MEMORY_SIZES]
    if bad:
        sizes = ", ".join(map(str, MEMORY_SIZES))
        return f"--memory {bad[0]} is not a serverless memory size; use one of {sizes}"
    if any(not 1 <= c <= 200 for c in args.concurrency):
        return "--concurrency values must be between 1 and 200 (MaxConcurrency's range)"
    if args.invocations < 1:
        return "--invocations must be at least 1"
    if args.rate < 0:
        return "--rate must not be negative"
    if not args.payload.is_file():
        return f"--payload {args.payload}: no such file"
    return None


def _meter_reader(args: argparse.Namespace) -> Any:
    import httpx

    def read(endpoint: str) -> MeterFigures | None:
        try:
            response = signed_get(args, "/metrics")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:  # a key without coldbrew:GetMetrics: priced by the client's figures
            return None
        return parse_meter(response.text, endpoint)

    return read


def tune_command(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from coldbrew.metering.prices import load_prices
    from coldbrew.tune.report import write_report
    from coldbrew.tune.sizing import sizing_notes

    # SIGTERM (a CI job cancelled, ``kill``) cleans up as Ctrl-C does: by unwinding through tune's
    # finally, which deletes what it made, rather than dying with endpoints left behind.
    signal.signal(signal.SIGTERM, _interrupt)
    problem = _check(args)
    if problem:
        print(f"coldbrew: {problem}", file=sys.stderr)
        return 2
    try:
        prices = load_prices(args.prices)
    except (OSError, ValueError) as exc:
        print(f"coldbrew: {exc}", file=sys.stderr)
        return 2
    payload = Payload(args.payload.read_bytes(), args.content_type)
    levels = sorted(set(args.concurrency))
    sm = server_client(args, "sagemaker")
    # No retries on invocations: each one sent is one measured, and one the meter counts.
    runtime = server_client(args, "sagemaker-runtime", max_attempts=1, max_pool_connections=max(levels) + 2)
    out = console()
    per_config = len(levels) * args.invocations

    def notes(configs: list[ConfigResult]) -> list[str]:
        p50s = {}
        for c in configs:
            first = next((lv.latency for lv in c.levels if lv.latency is not None), None)
            if first is not None:
                p50s[c.memory_mb] = first.p50_ms
        return sizing_notes(args.memory, None, p50s, levels)

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=out
    ) as progress:
        task = progress.add_task("starting", total=per_config * len(args.memory))

        def report_progress(label: str, done: int) -> None:
            progress.update(task, advance=done, description=label)

        try:
            result = tune(
                sm,
                runtime,
                _meter_reader(args),
                args.model,
                args.memory,
                levels,
                args.invocations,
                payload,
                prices,
                args.rate,
                args.latency_target_ms,
                report_progress,
                notes,
            )
        except KeyboardInterrupt:
            print("coldbrew: interrupted; the endpoints tune made are deleted", file=sys.stderr)
            return 130
        except (ClientError, BotoCoreError, RuntimeError) as exc:
            print(f"coldbrew: {_error(exc)} (the endpoints tune made are deleted)", file=sys.stderr)
            return 1
    paths = write_report(result, args.out)
    _summary_table(result, out)
    for note in result.notes:
        out.print(f"note: {note}")
    for config in result.configs:
        if config.failure is not None:
            out.print(f"[red]{config.memory_mb:,} MB not measured:[/red] {config.failure}")
    for problem in result.cleanup_problems:
        out.print(f"[red]not cleaned up:[/red] {problem}")
    out.print(f"recommendation: {result.recommendation.reason}")
    out.print(f"report: {paths['html']} (and {paths['csv'].name}, {paths['json'].name})")
    measured = [c for c in result.configs if c.failure is None]
    return 1 if result.cleanup_problems or not measured else 0


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _error(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'Error')}: {error.get('Message', exc)}"
    return str(exc)


def _summary_table(result: TuneResult, out: Any) -> None:
    from rich.table import Table

    from coldbrew.tune.report import config_summary

    def f(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    table = Table(
        "memory MB",
        "threads",
        "cold start ms",
        "warm p50 ms",
        "warm p99 ms",
        "max /s",
        "sent",
        "errors",
        "metered",
        "per 1M",
        "monthly",
        title=(
            f"{result.model}: {result.currency}, {result.price_region} prices; "
            f"monthly at {result.monthly_invocations:,.0f} invocations"
        ),
    )
    for config in result.configs:
        s = config_summary(config, result.recommendation.memory_mb)
        table.add_row(
            f"{s['memory_mb']:,}" + (" *" if s["recommended"] else ""),
            str(s["threads"]),
            f(s["cold_start_ms"]),
            f(s["warm_p50_ms"]),
            f(s["warm_p99_ms"]),
            f(s["max_throughput_per_s"]),
            str(s["sent"]),
            str(s["errors"]),
            "-" if s["meter_invocations"] is None else str(s["meter_invocations"]),
            f(s["cost_per_million"], 4),
            f(s["monthly_cost"], 4),
        )
    out.print(table)
