"""The scaling core's decisions as Prometheus metrics, per endpoint and variant, read at scrape time.

Counters belong to the running deployment of a variant: an UpdateEndpoint that replaces it starts
them again from zero, which Prometheus reads as a counter reset. A variant that has done nothing
yet (no environment, ever, nothing throttled) is left out until it does.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coldbrew.serving.service import Serving

_COUNTERS = (
    ("environment_starts", "coldbrew_scaling_environment_starts", "Environments the scaling core started"),
    ("cold_starts", "coldbrew_scaling_cold_starts", "Invocations that started an environment for themselves"),
    (
        "hedged",
        "coldbrew_scaling_hedged",
        "Cold-starting invocations served by an environment that freed up first",
    ),
    ("prewarms", "coldbrew_scaling_prewarms", "Environments pre-warmed by the keep-alive policy"),
    ("released", "coldbrew_scaling_released", "Idle environments released by the keep-alive policy"),
    ("evicted", "coldbrew_scaling_evicted", "Idle environments released for another variant's cold start"),
    ("throttled", "coldbrew_scaling_throttled", "Invocations throttled (MaxConcurrency or memory budget)"),
)
_LABELS = ["EndpointName", "VariantName"]


class ScalingCollector(Collector):
    def __init__(self, serving: Serving) -> None:
        self.serving = serving

    def collect(self) -> Iterator[Metric]:
        core = self.serving.pools.core
        counters = {attr: CounterMetricFamily(name, text, labels=_LABELS) for attr, name, text in _COUNTERS}
        held = CounterMetricFamily(
            "coldbrew_scaling_held_megabyte_seconds",
            "Memory-seconds held by environments, from the start asked for until they are gone",
            labels=_LABELS,
        )
        environments = GaugeMetricFamily(
            "coldbrew_scaling_environments",
            "Environments that exist now, by state",
            labels=[*_LABELS, "state"],
        )
        waiting = GaugeMetricFamily(
            "coldbrew_scaling_waiting",
            "Invocations waiting for an environment, or for a core (the rule for cores)",
            labels=_LABELS,
        )
        cores = GaugeMetricFamily(
            "coldbrew_scaling_invocation_cores",
            "Cores one invocation keeps busy, as its workers measure it (moving average)",
            labels=_LABELS,
        )
        cpu_limit = GaugeMetricFamily(
            "coldbrew_scaling_cpu_limit",
            "Invocations the variant runs at once at most, by its cores and COLDBREW_CPU_SLOTS",
            labels=_LABELS,
        )
        for name, endpoint in list(self.serving.endpoints.items()):
            for variant in list(endpoint.variants.values()):
                pool = core.pools.get(variant.pool)
                if pool is None:
                    continue
                labels = [name, variant.name]
                held_mb_s = self.serving.pools.held_megabyte_seconds(variant.pool)
                envs = list(pool.envs.values())
                values = [getattr(pool.stats, attr) for attr in counters]
                if not envs and not held_mb_s and not any(values):
                    # Never held an environment nor throttled: all zeros, and with thousands of
                    # endpoints scaled to zero, most of the page. Left out, as the meter's are.
                    continue
                held.add_metric(labels, held_mb_s)
                for counter, value in zip(counters.values(), values, strict=True):
                    counter.add_metric(labels, value)
                busy = sum(1 for e in envs if e.ready and e.in_flight)
                ready = sum(1 for e in envs if e.ready)
                environments.add_metric([*labels, "busy"], busy)
                environments.add_metric([*labels, "idle"], ready - busy)
                environments.add_metric([*labels, "starting"], len(envs) - ready)
                waiting.add_metric(labels, len(pool.waiters))
                if pool.cores is not None:
                    cores.add_metric(labels, pool.cores)
                limit = core.cpu_limit(pool)
                if limit is not None:
                    cpu_limit.add_metric(labels, limit)
        yield from counters.values()
        yield held
        yield environments
        yield waiting
        yield cores
        yield cpu_limit
