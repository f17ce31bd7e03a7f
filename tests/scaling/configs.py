"""Pool configs for the scaling tests (the core's and the live pools')."""

from __future__ import annotations

import math

from coldbrew.scaling.messages import PoolConfig


def serverless(
    variant: str = "a",
    *,
    memory_mb: int = 1024,
    max_concurrency: int = 4,
    min_environments: int = 0,
    idle_timeout_s: float = 300.0,
    keepalive: str = "fixed",
) -> PoolConfig:
    return PoolConfig(
        endpoint="ep",
        variant=variant,
        serverless=True,
        memory_mb=memory_mb,
        max_concurrency=max_concurrency,
        min_environments=min_environments,
        environment_concurrency=1,
        idle_timeout_s=idle_timeout_s,
        keepalive=keepalive,
    )


def provisioned(instances: int = 2, per_instance: int = 2, memory_mb: int = 16384) -> PoolConfig:
    return PoolConfig(
        endpoint="ep",
        variant="p",
        serverless=False,
        memory_mb=memory_mb,
        max_concurrency=instances * per_instance,
        min_environments=instances,
        environment_concurrency=per_instance,
        idle_timeout_s=math.inf,
    )


def transform_job(instances: int = 2, memory_mb: int = 1024) -> PoolConfig:
    """A batch transform job's pool: instances on demand, preemptible."""
    return PoolConfig(
        endpoint="job",
        variant="AllTraffic",
        serverless=False,
        memory_mb=memory_mb,
        max_concurrency=instances,
        min_environments=0,
        environment_concurrency=1,
        idle_timeout_s=1.0,
        scale_to_zero=True,
        preemptible=True,
    )
