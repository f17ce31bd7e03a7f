"""Cost arithmetic: pure functions of usage and a :class:`PriceTable`, shared by ``coldbrew cost``
and the simulator, so both price the same usage the same way."""

from __future__ import annotations

from dataclasses import dataclass

from coldbrew.metering.prices import DATA_GB, PriceTable


@dataclass(frozen=True)
class Usage:
    """What an endpoint variant used over a period."""

    invocations: int
    gb_seconds: float
    """Memory size (GB) times billed duration (s), summed over invocations."""
    bytes_in: int = 0
    bytes_out: int = 0


def serverless_cost(usage: Usage, prices: PriceTable) -> float:
    """SageMaker Serverless Inference: inference duration by memory, plus data processed in and out."""
    p = prices.sagemaker_serverless
    return (
        usage.gb_seconds * p.per_gb_second
        + usage.bytes_in / DATA_GB * p.per_gb_data_in
        + usage.bytes_out / DATA_GB * p.per_gb_data_out
    )


def serverless_provisioned_concurrency_cost(
    provisioned: int, memory_mb: int, hours: float, prices: PriceTable
) -> float:
    """What ProvisionedConcurrency environments cost for existing, on top of their inference."""
    return (
        provisioned
        * memory_mb
        / 1024
        * hours
        * 3600
        * prices.sagemaker_serverless.provisioned_concurrency_per_gb_second
    )


def lambda_cost(usage: Usage, prices: PriceTable, arch: str = "x86") -> float:
    """AWS Lambda: a price per request plus duration by memory (no data-processing charge)."""
    p = prices.lambda_arch(arch)
    return usage.invocations * p.per_request + usage.gb_seconds * p.per_gb_second


def instance_cost(instance: str, hours: float, prices: PriceTable, count: int = 1) -> float:
    """Always-on SageMaker instances: hourly price times hours they exist, whatever the traffic."""
    return prices.instance_hourly(instance) * hours * count


def per_million(cost: float, invocations: int) -> float | None:
    return None if invocations == 0 else cost / invocations * 1_000_000


def breakeven_per_hour(hourly: float, cost_per_invocation: float) -> float | None:
    """Invocations an hour above which an always-on instance at ``hourly`` is cheaper than serverless."""
    return None if cost_per_invocation <= 0 else hourly / cost_per_invocation
