"""What a simulation costs and how it performs, on serverless and on its alternatives."""

from __future__ import annotations

from typing import Any

import numpy as np

from coldbrew.metering.cost import (
    Usage,
    instance_cost,
    lambda_cost,
    per_million,
    serverless_cost,
    serverless_provisioned_concurrency_cost,
)
from coldbrew.metering.prices import DATA_GB, PriceTable
from coldbrew.simulate.batch import BatchDay, batch_report
from coldbrew.simulate.engine import SimulationResult, weighted_percentile
from coldbrew.simulate.traffic import latencies
from coldbrew.terminal import console

MONTH_DAYS = 30
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def _percentiles(values: np.ndarray, weights: np.ndarray) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for q in PERCENTILES:
        p = weighted_percentile(values, weights, q)
        out[f"p{q:g}_ms"] = None if p is None else round(p * 1000, 3)
    out["max_ms"] = None if values.size == 0 else round(float(values.max()) * 1000, 3)
    return out


def build_report(result: SimulationResult, prices: PriceTable) -> dict[str, Any]:
    spec, t = result.spec, result.totals
    hours = result.days * 24
    to_month = MONTH_DAYS / result.days
    gb = spec.memory_mb / 1024
    billed_s = t.billed_ms / 1000
    usage = Usage(t.served, billed_s * gb, t.served * spec.bytes_in, t.served * spec.bytes_out)

    def money(period_cost: float) -> dict[str, float | None]:
        return {
            "cost": period_cost,
            "cost_per_day": period_cost / result.days,
            "cost_per_month": period_cost * to_month,
            "cost_per_million": per_million(period_cost, t.served),
        }

    serverless = serverless_cost(usage, prices)
    if spec.provisioned_concurrency:
        serverless += serverless_provisioned_concurrency_cost(
            spec.provisioned_concurrency, spec.memory_mb, hours, prices
        )
    alternatives: list[dict[str, Any]] = [
        {
            "option": f"SageMaker Serverless {spec.memory_mb} MB",
            "kind": "serverless",
            "gb_seconds": usage.gb_seconds,
            "data_processed_gb": (usage.bytes_in + usage.bytes_out) / DATA_GB,
            **money(serverless),
            "cold_starts": t.cold_starts,
            "cold_start_rate": t.cold_starts / t.served if t.served else 0.0,
            "latency": _percentiles(result.response_s, result.weights),
        }
    ]
    lambda_mb = spec.compare.lambda_memory_mb or spec.memory_mb
    for arch in spec.compare.lambda_archs:
        lambda_usage = Usage(t.served, billed_s * lambda_mb / 1024)
        alternatives.append(
            {
                "option": f"Lambda {arch} {lambda_mb} MB",
                "kind": "lambda",
                "gb_seconds": lambda_usage.gb_seconds,
                **money(lambda_cost(lambda_usage, prices, arch)),
                "cold_starts": t.cold_starts,
                "cold_start_rate": t.cold_starts / t.served if t.served else 0.0,
                "latency": _percentiles(result.response_s, result.weights),
            }
        )
    instances = spec.compare.instances or [prices.smallest_instance(spec.memory_mb)]
    # Always-on instances: no cold starts, and (an assumption, not simulated) enough of them to
    # serve the peak without queueing, so clients see the model latency alone.
    model_only = latencies(spec.model_latency, min(t.served, 200_000) or 1, ("instances", spec.traffic.seed))
    # A fleet's always-on alternative is that many instances per endpoint.
    per_endpoint = result.fleet.endpoints if result.fleet is not None else 1
    for itype in instances:
        count = spec.compare.instance_count * per_endpoint
        alternatives.append(
            {
                "option": f"{count} x {itype} always on",
                "kind": "instance",
                "instance_type": itype,
                "instance_count": count,
                "hourly_price": prices.instance_hourly(itype),
                "hours": hours,
                **money(instance_cost(itype, hours, prices, count)),
                "cold_starts": 0,
                "cold_start_rate": 0.0,
                "latency": _percentiles(model_only, np.ones(model_only.size)),
            }
        )
    return {
        "name": spec.name,
        "days": result.days,
        "memory_mb": spec.memory_mb,
        "max_concurrency": spec.max_concurrency,
        "keep_alive": spec.keep_alive.model_dump(),
        "prices": {"region": prices.region, "date": prices.date, "currency": prices.currency},
        "invocations": t.invocations,
        "served": t.served,
        "throttled": t.throttled,
        "cold_starts": t.cold_starts,
        "environment_starts": t.environment_starts,
        "waited": t.waited,
        "billed_seconds": billed_s,
        "billed_gb_seconds": usage.gb_seconds,
        "held_gb_seconds": t.held_mb_s / 1024,
        "peak_environments": t.peak_environments,
        "distinct_days_simulated": result.distinct_days,
        "alternatives": alternatives,
        "fleet": None if result.fleet is None else _fleet(result),
        "batch": None if spec.batch is None else _batch(result, prices),
    }


def _batch(result: SimulationResult, prices: PriceTable) -> dict[str, Any]:
    """The simulated requests (or the batch section's own count and duration) as batch jobs."""
    spec, t = result.spec, result.totals
    batch = spec.batch
    assert batch is not None
    requests = batch.requests_per_day
    if requests is None:
        requests = round(t.served / result.days)
    duration_ms = batch.duration_ms
    if duration_ms is None:
        duration_ms = t.billed_ms / t.served if t.served else 0.0
    memory = batch.lambda_memory_mb or spec.compare.lambda_memory_mb or spec.memory_mb
    return batch_report(batch, BatchDay(requests, duration_ms, batch.jobs_per_day), memory, prices)


def _fleet(result: SimulationResult) -> dict[str, Any]:
    fleet = result.fleet
    assert fleet is not None
    ranked = fleet.per_endpoint  # most popular first
    tenth = max(1, len(ranked) // 10)

    def group(results: list[Any]) -> dict[str, Any]:
        invocations = sum(r.invocations for r in results)
        cold = sum(r.cold_starts for r in results)
        return {
            "endpoints": len(results),
            "invocations": invocations,
            "cold_starts": cold,
            "cold_start_rate": cold / invocations if invocations else 0.0,
        }

    return {
        "endpoints": fleet.endpoints,
        "endpoints_invoked": sum(1 for r in ranked if r.invocations),
        "memory_budget_mb": fleet.memory_budget_mb,
        "peak_memory_mb": fleet.peak_memory_mb,
        "evictions": fleet.evictions,
        "most_popular_tenth": group(ranked[:tenth]),
        "rest": group(ranked[tenth:]),
    }


def render(report: dict[str, Any]) -> None:
    from rich.table import Table

    out = console()
    out.print(
        f"[bold]{report['name']}[/]: {report['days']:g} days, {report['invocations']:,} invocations "
        f"({report['throttled']:,} throttled), {report['cold_starts']:,} cold starts, "
        f"{report['environment_starts']:,} environment starts, "
        f"{report['held_gb_seconds']:,.0f} GB-s held, {report['billed_gb_seconds']:,.0f} GB-s billed; "
        f"prices {report['prices']['region']} {report['prices']['date']}"
    )
    fleet = report.get("fleet")
    if fleet is not None:
        top, rest = fleet["most_popular_tenth"], fleet["rest"]
        out.print(
            f"{fleet['endpoints']:,} endpoints ({fleet['endpoints_invoked']:,} invoked) on a "
            f"{fleet['memory_budget_mb']:,} MB budget: peak {fleet['peak_memory_mb']:,} MB, "
            f"{fleet['evictions']:,} evictions; cold starts {top['cold_start_rate']:.2%} of the most popular "
            f"tenth's invocations, {rest['cold_start_rate']:.2%} of the rest's"
        )
    table = Table(
        "option", "per month", "per day", "per 1M inv.", "cold starts", "p50 ms", "p99 ms", "max ms"
    )
    for alt in report["alternatives"]:
        lat = alt["latency"]
        table.add_row(
            alt["option"],
            f"{alt['cost_per_month']:,.2f}",
            f"{alt['cost_per_day']:,.4f}",
            "-" if alt["cost_per_million"] is None else f"{alt['cost_per_million']:,.2f}",
            f"{alt['cold_starts']:,} ({alt['cold_start_rate']:.2%})",
            f"{lat['p50_ms']}",
            f"{lat['p99_ms']}",
            f"{lat['max_ms']}",
        )
    out.print(table)
    batch = report.get("batch")
    if batch is not None:
        _render_batch(batch)


def _render_batch(batch: dict[str, Any]) -> None:
    from rich.table import Table

    jobs = batch["jobs_per_day"]
    table = Table(
        "option",
        "billed s per job",
        "per day",
        "per month",
        "per 1M req.",
        title=(
            f"As batch: {batch['requests_per_day']:,} requests x {batch['duration_ms']:g} ms a day "
            f"({batch['work_seconds_per_day']:,.0f} s of work) in {jobs:,} job{'s' if jobs != 1 else ''}"
        ),
    )
    for option in batch["options"]:
        billed = option["billed_seconds_per_job"]
        table.add_row(
            option["option"],
            "-" if billed is None else f"{billed:,}",
            f"{option['cost_per_day']:,.4f}",
            f"{option['cost_per_month']:,.2f}",
            "-" if option["cost_per_million"] is None else f"{option['cost_per_million']:,.2f}",
        )
    console().print(table)
