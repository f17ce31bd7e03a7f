"""What runs now: every live variant's environments, copied off serving's state on the event loop.

Serving's pools and the scaling core live on the event loop and change with every invocation, so
the UI copies what it shows in one pass on the loop (plain attribute reads, no I/O, no await) and
does everything else — reading each worker's memory from /proc, rendering — in a thread, on the
copy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from coldbrew.backends.processes import rss
from coldbrew.serving.service import Serving

BUSY, IDLE, STARTING, RETIRING = "busy", "idle", "starting", "retiring"


@dataclass(frozen=True, slots=True)
class LiveEnvironment:
    id: int
    state: str
    """busy, idle, starting (its worker is not ready yet) or retiring (finishing, then stopped)."""
    purpose: str
    """Why it was started: demand (a cold start), prewarm or minimum."""
    memory_mb: int
    """The memory it holds in the budget (MemorySizeInMB, or the instance type's)."""
    in_flight: int
    pid: int | None
    age_s: float | None
    """Since its worker was ready; None while it starts."""
    served: int
    """Invocations it has finished."""
    rss_bytes: int | None = None
    """Its worker's resident memory, read after the snapshot (None while it starts)."""


@dataclass(frozen=True, slots=True)
class LiveVariant:
    endpoint: str
    variant: str
    serverless: bool
    memory_mb: int
    max_concurrency: int
    min_environments: int
    environments: tuple[LiveEnvironment, ...]
    environment_starts: int
    cold_starts: int
    released: int
    evicted: int
    throttled: int
    held_mb: int
    """Memory its environments hold in the budget now."""

    def count(self, state: str) -> int:
        return sum(1 for e in self.environments if e.state == state)


@dataclass(frozen=True, slots=True)
class LiveState:
    taken_at: float
    variants: tuple[LiveVariant, ...]
    memory_budget_mb: int
    used_mb: int
    evictions: int

    _by_endpoint: dict[str, list[LiveVariant]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Indexed once per snapshot: the endpoints page asks for every endpoint's variants, and a
        # scan per endpoint made its rows quadratic (a quarter of its time with 1,000 endpoints).
        by_endpoint: dict[str, list[LiveVariant]] = {}
        for variant in self.variants:
            by_endpoint.setdefault(variant.endpoint.lower(), []).append(variant)
        object.__setattr__(self, "_by_endpoint", by_endpoint)

    def of(self, endpoint: str) -> list[LiveVariant]:
        return list(self._by_endpoint.get(endpoint.lower(), ()))


def snapshot(serving: Serving) -> LiveState:
    """Call on the event loop: a consistent copy of every endpoint's pools."""
    now_wall, now_mono = time.time(), time.monotonic()
    pools, core = serving.pools, serving.pools.core
    variants: list[LiveVariant] = []
    for endpoint in serving.endpoints.values():
        for routed in endpoint.variants.values():
            pool = core.pools.get(routed.pool)
            if pool is None:
                continue
            envs: list[LiveEnvironment] = []
            held = 0
            for retiring, states in ((False, pool.envs), (True, pool.retiring)):
                for state in states.values():
                    held += state.memory_mb
                    env = pools.environments.get(state.id)
                    if not state.ready or env is None:
                        kind = STARTING
                    elif retiring:
                        kind = RETIRING
                    else:
                        kind = BUSY if state.in_flight else IDLE
                    envs.append(
                        LiveEnvironment(
                            id=state.id,
                            state=kind,
                            purpose=state.purpose.value,
                            memory_mb=state.memory_mb,
                            in_flight=state.in_flight,
                            pid=env.worker.pid if env is not None else None,
                            age_s=None if env is None else max(0.0, now_mono - env.ready_at),
                            served=env.served if env is not None else 0,
                        )
                    )
            stats = pool.stats
            variants.append(
                LiveVariant(
                    endpoint=endpoint.name,
                    variant=routed.name,
                    serverless=pool.config.serverless,
                    memory_mb=pool.config.memory_mb,
                    max_concurrency=pool.config.max_concurrency,
                    min_environments=pool.config.min_environments,
                    environments=tuple(sorted(envs, key=lambda e: e.id)),
                    environment_starts=stats.environment_starts,
                    cold_starts=stats.cold_starts,
                    released=stats.released,
                    evicted=stats.evicted,
                    throttled=stats.throttled,
                    held_mb=held,
                )
            )
    variants.sort(key=lambda v: (v.endpoint.lower(), v.variant))
    return LiveState(now_wall, tuple(variants), core.memory_budget_mb, core.used_mb, core.evictions)


def with_memory(state: LiveState) -> LiveState:
    """The snapshot with each started worker's resident memory (reads /proc: call in a thread)."""
    variants = []
    for variant in state.variants:
        envs = tuple(
            replace(e, rss_bytes=_rss(e.pid)) if e.pid is not None and e.state != STARTING else e
            for e in variant.environments
        )
        variants.append(replace(variant, environments=envs))
    return replace(state, variants=tuple(variants))


def _rss(pid: int) -> int | None:
    return rss(pid, children=True) or None  # 0: it exited between the snapshot and the read
