"""A simulated workload run as batch jobs: a Batch Transform job, a Fargate task, Lambda invocations.

Batch work has no arrivals to wait for and no cold starts to pay per request: what it costs is how
long each job runs, so this is arithmetic over the day's requests, not a replay through the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coldbrew.metering.batch_cost import (
    billed_seconds,
    fargate_billed_seconds,
    fargate_task_cost,
    lambda_batch_cost,
    transform_job_cost,
)
from coldbrew.metering.cost import per_million
from coldbrew.metering.prices import PriceTable
from coldbrew.simulate.spec import Batch

MONTH_DAYS = 30


@dataclass(frozen=True)
class BatchDay:
    """One day of batch work: ``requests`` of ``duration_ms`` each, split into ``jobs`` jobs."""

    requests: int
    duration_ms: float
    jobs: int

    @property
    def work_s(self) -> float:
        """Seconds of model time in the day, on one worker."""
        return self.requests * self.duration_ms / 1000

    def job_seconds(self, startup_s: float, workers: int) -> float:
        """How long one job runs: its start-up, then its share of the work over its workers."""
        return startup_s + self.work_s / self.jobs / workers


def check_batch_prices(batch: Batch, prices: PriceTable) -> None:
    """Raise ``ValueError`` naming what to add when the price table cannot price ``batch``."""
    try:
        prices.batch_transform_hourly(batch.instance_type)
        prices.fargate_arch(batch.fargate_arch)
        prices.lambda_arch(batch.lambda_arch)
    except KeyError as exc:
        raise ValueError(f"batch: {exc.args[0]}") from None


def batch_report(batch: Batch, day: BatchDay, lambda_memory_mb: int, prices: PriceTable) -> dict[str, Any]:
    """The day's requests priced three ways, per day and per 30-day month."""

    def money(per_day: float) -> dict[str, float | None]:
        return {
            "cost_per_day": per_day,
            "cost_per_month": per_day * MONTH_DAYS,
            "cost_per_million": per_million(per_day, day.requests),
        }

    workers = batch.instance_count * batch.max_concurrent_transforms
    transform_s = day.job_seconds(batch.transform_startup_s, workers)
    transform = transform_job_cost(batch.instance_type, batch.instance_count, transform_s, prices)
    fargate_s = day.job_seconds(batch.fargate_startup_s, 1)
    fargate = fargate_task_cost(
        batch.fargate_vcpu, batch.fargate_memory_gb, fargate_s, prices, batch.fargate_arch
    )
    on_lambda = lambda_batch_cost(day.requests, day.duration_ms, lambda_memory_mb, prices, batch.lambda_arch)
    options = [
        {
            "option": f"Batch Transform {batch.instance_count} x {batch.instance_type}",
            "kind": "batch_transform",
            "instance_type": batch.instance_type,
            "instance_count": batch.instance_count,
            "hourly_price": prices.batch_transform_hourly(batch.instance_type),
            "seconds_per_job": transform_s,
            "billed_seconds_per_job": billed_seconds(transform_s),
            **money(day.jobs * transform),
        },
        {
            "option": f"Fargate {batch.fargate_vcpu:g} vCPU {batch.fargate_memory_gb:g} GB "
            f"{batch.fargate_arch}",
            "kind": "fargate",
            "vcpu": batch.fargate_vcpu,
            "memory_gb": batch.fargate_memory_gb,
            "seconds_per_job": fargate_s,
            "billed_seconds_per_job": fargate_billed_seconds(fargate_s, prices),
            **money(day.jobs * fargate),
        },
        {
            "option": f"Lambda {batch.lambda_arch} {lambda_memory_mb} MB",
            "kind": "lambda",
            "memory_mb": lambda_memory_mb,
            "seconds_per_job": None,
            "billed_seconds_per_job": None,
            **money(on_lambda),
        },
    ]
    return {
        "requests_per_day": day.requests,
        "duration_ms": day.duration_ms,
        "jobs_per_day": day.jobs,
        "work_seconds_per_day": day.work_s,
        "transform_startup_s": batch.transform_startup_s,
        "fargate_startup_s": batch.fargate_startup_s,
        "options": options,
    }
