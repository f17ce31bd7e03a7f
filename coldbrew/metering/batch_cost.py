"""What batch work costs: a SageMaker Batch Transform job, an AWS Fargate task, Lambda invocations.

Pure functions of seconds and a :class:`PriceTable`, shared by ``coldbrew cost`` (the jobs the server
ran) and the simulator (a batch workload priced three ways), so both bill a second the same way.
"""

from __future__ import annotations

import math

from coldbrew.metering.cost import Usage, lambda_cost
from coldbrew.metering.prices import PriceTable

FARGATE_MEMORY_GB: dict[float, tuple[float, ...]] = {
    0.25: (0.5, 1, 2),
    0.5: (1, 2, 3, 4),
    1: tuple(range(2, 9)),
    2: tuple(range(4, 17)),
    4: tuple(range(8, 31)),
    8: tuple(range(16, 61, 4)),
    16: tuple(range(32, 121, 8)),
}
"""The task sizes Fargate accepts (Linux): vCPUs -> the memory (GB) allowed with them."""


def billed_seconds(seconds: float) -> int:
    """Whole seconds billed for ``seconds`` of use: SageMaker and Fargate both bill per second,
    rounded up (the rounding at 1e-6 keeps 2100.0000000001 from becoming 2101)."""
    return max(0, math.ceil(round(seconds, 6)))


def transform_job_cost(instance_type: str, instance_count: int, seconds: float, prices: PriceTable) -> float:
    """A Batch Transform job: ``instance_count`` instances for ``seconds`` each, at the type's Batch
    Transform hourly price, per second with no minimum (a job that never started costs nothing)."""
    return prices.batch_transform_hourly(instance_type) * instance_count * billed_seconds(seconds) / 3600


def check_fargate_size(vcpus: float, memory_gb: float) -> None:
    """Raise ``ValueError`` unless Fargate runs a task of ``vcpus`` with ``memory_gb``."""
    allowed = FARGATE_MEMORY_GB.get(vcpus)
    if allowed is None:
        raise ValueError(
            f"Fargate has no {vcpus:g} vCPU task; choose {', '.join(f'{v:g}' for v in FARGATE_MEMORY_GB)}"
        )
    if memory_gb not in allowed:
        sizes = ", ".join(f"{m:g}" for m in allowed)
        raise ValueError(f"a {vcpus:g} vCPU Fargate task takes {sizes} GB, not {memory_gb:g}")


def fargate_billed_seconds(seconds: float, prices: PriceTable) -> int:
    """Seconds a Fargate task of ``seconds`` is billed: per second, never below the minimum."""
    minimum = prices.fargate.minimum_billed_seconds if prices.fargate is not None else 0.0
    return max(billed_seconds(seconds), math.ceil(minimum))


def fargate_task_cost(
    vcpus: float, memory_gb: float, seconds: float, prices: PriceTable, arch: str = "x86"
) -> float:
    """One Fargate task (Linux) of ``vcpus`` and ``memory_gb`` running ``seconds``: per vCPU-hour plus
    per GB-hour, billed per second with the one-minute minimum."""
    rates = prices.fargate_arch(arch)
    hourly = vcpus * rates.per_vcpu_hour + memory_gb * rates.per_gb_hour
    return hourly * fargate_billed_seconds(seconds, prices) / 3600


def lambda_batch_cost(
    requests: int, duration_ms: float, memory_mb: int, prices: PriceTable, arch: str = "x86"
) -> float:
    """``requests`` Lambda invocations of ``duration_ms`` each (billed per millisecond, rounded up):
    a batch on Lambda is one invocation per record, as the article prices it."""
    gb_seconds = requests * math.ceil(round(duration_ms, 6)) / 1000 * memory_mb / 1024
    return lambda_cost(Usage(requests, gb_seconds), prices, arch)
