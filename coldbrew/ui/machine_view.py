"""The machine page: the memory budget the scaling core shares out, the zygotes, evictions."""

from __future__ import annotations

from dataclasses import dataclass

from coldbrew.ui.live import LiveState


@dataclass(frozen=True, slots=True)
class ZygoteRow:
    runtime: str
    pid: int
    rss_bytes: int
    alive: bool


@dataclass(frozen=True, slots=True)
class PoolRow:
    endpoint: str
    variant: str
    serverless: bool
    memory_mb: int
    environments: int
    held_mb: int
    environment_starts: int
    released: int
    evicted: int
    """Its environments released to make room for another variant's cold start."""
    throttled: int


@dataclass(frozen=True, slots=True)
class MachinePage:
    memory_budget_mb: int
    used_mb: int
    free_mb: int
    machine_total_bytes: int
    machine_available_bytes: int
    zygotes: list[ZygoteRow]
    zygotes_rss_bytes: int
    evictions: int
    pools: list[PoolRow]
    taken_at: float


def machine_page(
    live: LiveState, zygotes: list[ZygoteRow], machine_total_bytes: int, machine_available_bytes: int
) -> MachinePage:
    pools = [
        PoolRow(
            v.endpoint,
            v.variant,
            v.serverless,
            v.memory_mb,
            len(v.environments),
            v.held_mb,
            v.environment_starts,
            v.released,
            v.evicted,
            v.throttled,
        )
        for v in live.variants
    ]
    return MachinePage(
        memory_budget_mb=live.memory_budget_mb,
        used_mb=live.used_mb,
        free_mb=max(0, live.memory_budget_mb - live.used_mb),
        machine_total_bytes=machine_total_bytes,
        machine_available_bytes=machine_available_bytes,
        zygotes=zygotes,
        zygotes_rss_bytes=sum(z.rss_bytes for z in zygotes if z.alive),
        evictions=live.evictions,
        pools=pools,
        taken_at=live.taken_at,
    )
