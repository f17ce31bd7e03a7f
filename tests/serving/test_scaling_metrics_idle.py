"""The scaling core's metrics leave out variants that have done nothing yet (thousands of endpoints
scaled to zero would otherwise be most of ``/metrics``), and keep every one that has."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from coldbrew.scaling.core import EnvironmentState, PoolStats, Purpose
from coldbrew.serving.metrics import ScalingCollector
from coldbrew.serving.router import LiveEndpoint, RoutedVariant


def _serving(pools: dict[int, Any], held: dict[int, float]) -> Any:
    endpoints = {
        f"ep-{p}": LiveEndpoint(f"ep-{p}", {"v": RoutedVariant("v", p, 1.0, True, 1024)}, "f") for p in pools
    }
    core = SimpleNamespace(pools=pools, cpu_limit=lambda pool: 3 if pool.cores else None)
    return SimpleNamespace(
        endpoints=endpoints,
        pools=SimpleNamespace(core=core, held_megabyte_seconds=lambda pool: held.get(pool, 0.0)),
    )


def pool(stats: PoolStats, envs: dict[int, EnvironmentState], cores: float | None = None) -> Any:
    return SimpleNamespace(stats=stats, envs=envs, waiters={}, cores=cores)


def test_only_variants_that_did_something_are_listed() -> None:
    env = EnvironmentState(1, 2, 1024, next(iter(Purpose)), ready=True, in_flight=1)
    pools = {
        1: pool(PoolStats(), {}),  # nothing, ever
        2: pool(PoolStats(environment_starts=1), {1: env}, cores=0.98),  # busy now
        3: pool(PoolStats(environment_starts=1, released=1), {}),  # back to zero
        4: pool(PoolStats(throttled=2), {}),  # refused, never started one
        5: pool(PoolStats(), {}),  # held memory (its counters since reset)
    }
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScalingCollector(cast(Any, _serving(pools, {5: 12.0}))))
    text = generate_latest(registry).decode()
    listed = {
        line.split('EndpointName="')[1].split('"')[0]
        for line in text.splitlines()
        if 'EndpointName="' in line
    }
    assert listed == {"ep-2", "ep-3", "ep-4", "ep-5"}
    assert 'coldbrew_scaling_environments{EndpointName="ep-2",VariantName="v",state="busy"} 1.0' in text
    assert 'coldbrew_scaling_environments{EndpointName="ep-3",VariantName="v",state="idle"} 0.0' in text
    assert 'coldbrew_scaling_throttled_total{EndpointName="ep-4",VariantName="v"} 2.0' in text
    assert 'coldbrew_scaling_invocation_cores{EndpointName="ep-2",VariantName="v"} 0.98' in text
    assert 'coldbrew_scaling_cpu_limit{EndpointName="ep-2",VariantName="v"} 3.0' in text
    assert 'coldbrew_scaling_cpu_limit{EndpointName="ep-3"' not in text
    assert 'coldbrew_scaling_held_megabyte_seconds_total{EndpointName="ep-5",VariantName="v"} 12.0' in text
