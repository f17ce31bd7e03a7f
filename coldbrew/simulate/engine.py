"""The simulator: a discrete-event driver of the scaling core under a virtual clock.

Every decision comes from :class:`coldbrew.scaling.core.ScalingCore`, the same object the live
server runs (:mod:`coldbrew.serving.pools`); this module only plays the world around it: arrivals
come from the traffic, an environment is ready a cold-start time after the core asks for it, an
invocation finishes its model latency after the core routes it, and time passes between events.
So what the simulator predicts is what the live pools do, for one variant or for many variants
sharing one machine's memory budget (:func:`simulate_machine`).

A month of the staging scenario is 4.5 million arrivals; days with the same arrivals that start
from the same state end the same way, so each distinct (arrivals, state) day is simulated once and
its result reused (``uniform`` traffic with the fixed policy: two distinct days in a month).
"""

from __future__ import annotations

import copy
import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coldbrew.scaling.core import ScalingCore
from coldbrew.scaling.messages import (
    Arrival,
    Deploy,
    Finished,
    PoolConfig,
    Ready,
    Reject,
    Route,
    Start,
    Stop,
    StopReason,
    Tick,
)
from coldbrew.simulate.spec import DAY_S, SimulationSpec
from coldbrew.simulate.traffic import day_traffic, latencies, trace_traffic

UNLIMITED_BUDGET_MB = 2**62
"""A lone variant is simulated without a machine around it."""

_READY, _DONE = 0, 1


@dataclass
class DayResult:
    invocations: int = 0
    served: int = 0
    throttled: int = 0
    cold_starts: int = 0
    """Invocations served by the environment started for them (metered as cold starts)."""
    environment_starts: int = 0
    waited: int = 0
    """Invocations that waited for an environment (their own cold start, or one freeing up)."""
    evictions: int = 0
    """Environments of this variant released to make room for another's cold start."""
    billed_ms: int = 0
    """Sum over served invocations of the model latency rounded up to the millisecond."""
    latency_ms_sum: float = 0.0
    held_mb_s: float = 0.0
    peak_environments: int = 0
    response_s: list[np.ndarray] = field(default_factory=list)
    """Client-seen latency of each served invocation: waiting, cold start and model time."""

    def response_times(self) -> np.ndarray:
        return np.concatenate(self.response_s) if self.response_s else np.empty(0)

    def add(self, other: DayResult) -> None:
        for name in (
            "invocations",
            "served",
            "throttled",
            "cold_starts",
            "environment_starts",
            "waited",
            "evictions",
            "billed_ms",
            "latency_ms_sum",
            "held_mb_s",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.peak_environments = max(self.peak_environments, other.peak_environments)


class _Variant:
    """What the simulator knows of one pool beyond the core: how long its starts take, what it holds."""

    def __init__(self, config: PoolConfig, cold_start: Callable[[], float]) -> None:
        self.config = config
        self.cold_start = cold_start
        self.live = 0
        self.held_from: dict[int, float] = {}
        """Environment -> since when its memory has been counted (start, or the last period's end)."""
        self.result = DayResult()
        self.responses: list[float] = []


class MachineSim:
    """One machine: the scaling core and the virtual world around it. Times are seconds."""

    def __init__(self, memory_budget_mb: int = UNLIMITED_BUDGET_MB) -> None:
        self.core = ScalingCore(memory_budget_mb)
        self.variants: dict[int, _Variant] = {}
        self.clock = 0.0
        self._events: list[tuple[float, int, int, int, int]] = []
        """(time, sequence, kind, environment, request)."""
        self._seq = itertools.count()
        self._requests = itertools.count(1)
        self._pending: dict[int, tuple[int, float, float]] = {}
        """Request -> (pool, arrival time, model latency) until it is routed or rejected."""
        self._env_pool: dict[int, int] = {}
        self._wake = math.inf
        self.peak_used_mb = 0
        """Most of the memory budget in use at once."""
        self.peak_environments = 0
        """Most environments that existed at once, over every variant."""

    # --- setup ---------------------------------------------------------------------------------

    def add_variant(self, config: PoolConfig, cold_start: Callable[[], float], at: float = 0.0) -> int:
        """Deploy a variant at ``at`` (its minimum environments start then); returns its pool id."""
        pool = self.core.add_pool(config)
        self.variants[pool] = _Variant(config, cold_start)
        self._apply(self.core.handle(Deploy(pool, check=False), at), at)
        return pool

    # --- the loop ------------------------------------------------------------------------------

    def arrive(self, pool: int, t: float, latency: float) -> None:
        """An invocation of ``pool`` at ``t`` (not before the last one) running ``latency`` seconds."""
        self.advance(t)
        request = next(self._requests)
        self._pending[request] = (pool, t, latency)
        self.variants[pool].result.invocations += 1
        self._apply(self.core.handle(Arrival(pool, request), t), t)

    def advance(self, t: float) -> None:
        """Run every event and every due tick up to and including ``t``, in time order."""
        events = self._events
        while True:
            next_event = events[0][0] if events else math.inf
            if self._wake <= t and self._wake <= next_event:
                at = self._wake
                self.clock = at
                self._apply(self.core.handle(Tick(), at), at)
                self._wake = self.core.next_wakeup()
                continue
            if next_event > t:
                break
            at, _, kind, env, request = heapq.heappop(events)
            self.clock = at
            if kind == _READY:
                variant = self.variants[self._env_pool[env]]
                variant.live += 1
                variant.result.peak_environments = max(variant.result.peak_environments, variant.live)
                self._apply(self.core.handle(Ready(env), at), at)
            else:
                self._apply(self.core.handle(Finished(env, request), at), at)
        self.clock = max(self.clock, t)

    def _apply(self, actions: Sequence[object], t: float) -> None:
        for action in actions:
            if isinstance(action, Route):
                pool, arrived, latency = self._pending.pop(action.request)
                result = self.variants[pool].result
                result.served += 1
                result.cold_starts += action.cold
                result.waited += t > arrived
                result.billed_ms += math.ceil(round(latency * 1000, 6))
                self.variants[pool].responses.append(t - arrived + latency)
                heapq.heappush(
                    self._events, (t + latency, next(self._seq), _DONE, action.env, action.request)
                )
            elif isinstance(action, Start):
                variant = self.variants[action.pool]
                variant.result.environment_starts += 1
                self.peak_used_mb = max(self.peak_used_mb, self.core.used_mb)
                self.peak_environments = max(self.peak_environments, len(self.core.envs))
                variant.held_from[action.env] = t
                self._env_pool[action.env] = action.pool
                ready_at = t + variant.cold_start()
                heapq.heappush(self._events, (ready_at, next(self._seq), _READY, action.env, 0))
            elif isinstance(action, Stop):
                pool = self._env_pool.pop(action.env)
                variant = self.variants[pool]
                variant.result.held_mb_s += (t - variant.held_from.pop(action.env)) * variant.config.memory_mb
                variant.live -= 1
                if action.reason is StopReason.EVICTED:
                    variant.result.evictions += 1
            elif isinstance(action, Reject):
                pool, _, _ = self._pending.pop(action.request)
                self.variants[pool].result.throttled += 1
        hint = self.core.take_wakeup_hint()
        if hint < self._wake:
            self._wake = hint

    def close_period(self, t: float) -> dict[int, DayResult]:
        """Account memory held up to ``t`` and hand over each variant's result; start new ones."""
        self.advance(t)
        results = {}
        for pool, variant in self.variants.items():
            for env, since in variant.held_from.items():
                variant.result.held_mb_s += (t - since) * variant.config.memory_mb
                variant.held_from[env] = t
            variant.result.response_s.append(np.asarray(variant.responses))
            results[pool] = variant.result
            variant.result = DayResult(peak_environments=variant.live)
            variant.responses = []
        return results

    # --- reuse of a simulated day ----------------------------------------------------------------

    def state_key(self, at: float) -> tuple[object, ...]:
        """The state at ``at``, relative to it: equal keys evolve alike under equal arrivals."""

        def rel(x: float) -> float:
            return round(x - at, 6)

        # Environment and request ids differ from day to day; their order does not.
        pending = tuple(sorted((rel(t), kind) for t, _, kind, _, _ in self._events))
        waiting = tuple(sorted((rel(arrived), latency) for _, arrived, latency in self._pending.values()))
        return (self.core.state_key(at), pending, waiting)

    def snapshot(self) -> dict[str, Any]:
        core = self.core.snapshot()
        state = {k: copy.deepcopy(v) for k, v in vars(self).items() if k not in ("core", "variants")}
        live = {pool: (v.live, dict(v.held_from)) for pool, v in self.variants.items()}
        return {"core": core, "state": state, "live": live, "clock": self.clock}

    def restore(self, snapshot: dict[str, Any], delta: float) -> None:
        """Continue from ``snapshot`` moved ``delta`` seconds later (results are not restored)."""
        self.core = snapshot["core"].snapshot()
        self.core.shift(delta)
        for name, value in snapshot["state"].items():
            setattr(self, name, copy.deepcopy(value))
        self._events = [(t + delta, s, k, e, r) for t, s, k, e, r in self._events]
        heapq.heapify(self._events)
        self._pending = {r: (p, a + delta, lat) for r, (p, a, lat) in self._pending.items()}
        self._wake += delta
        self.clock = snapshot["clock"] + delta
        for pool, (live, held_from) in snapshot["live"].items():
            variant = self.variants[pool]
            variant.live = live
            variant.held_from = {env: since + delta for env, since in held_from.items()}


@dataclass
class FleetResult:
    """What many endpoints on one machine did, beyond the sum of their results."""

    endpoints: int
    memory_budget_mb: int
    evictions: int
    peak_memory_mb: int
    """Most memory the environments held (or reserved for starting ones) at once."""
    per_endpoint: list[DayResult]
    """By popularity, most popular first."""


@dataclass
class SimulationResult:
    spec: SimulationSpec
    days: float
    """Simulated length in days."""
    totals: DayResult
    response_s: np.ndarray
    weights: np.ndarray
    distinct_days: int
    fleet: FleetResult | None = None


def pool_config(spec: SimulationSpec, endpoint: str = "simulated") -> PoolConfig:
    return PoolConfig(
        endpoint=endpoint,
        variant="AllTraffic",
        serverless=True,
        memory_mb=spec.memory_mb,
        max_concurrency=spec.max_concurrency,
        min_environments=spec.provisioned_concurrency,
        idle_timeout_s=spec.keep_alive.idle_timeout_s,
        keepalive=spec.keep_alive.policy,
    )


def cold_start_draws(spec: SimulationSpec) -> Callable[[], float]:
    """The spec's fixed cold-start time, or draws from its measured ones (seeded)."""
    draws = spec.cold_start_empirical_s
    if not draws:
        fixed = spec.cold_start_s
        return lambda: fixed
    rng = np.random.default_rng(spec.traffic.seed)
    values = list(draws)
    return lambda: float(values[int(rng.integers(len(values)))])


def simulate(spec: SimulationSpec, reuse_days: bool = True) -> SimulationResult:
    if spec.fleet is not None:
        return _simulate_fleet(spec)
    sim = MachineSim()
    pool = sim.add_variant(pool_config(spec), cold_start_draws(spec))
    if spec.traffic.timestamps_file is not None:
        arrivals, length, recorded = trace_traffic(spec.traffic.timestamps_file)
        lat = (
            recorded
            if recorded is not None
            else latencies(spec.model_latency, arrivals.size, ("trace", spec.traffic.seed))
        )
        for t, latency in zip(arrivals.tolist(), lat.tolist(), strict=True):
            sim.arrive(pool, t, latency)
        end = length + spec.keep_alive.idle_timeout_s + spec.cold_start_s + 60
        day = sim.close_period(end)[pool]
        day.latency_ms_sum = float(lat.sum() * 1000)
        response = day.response_times()
        return SimulationResult(spec, max(length, 1.0) / DAY_S, day, response, np.ones(response.size), 1)
    # Only a stateless policy evolves the same from the same state: others are simulated day by day.
    memo_allowed = reuse_days and spec.keep_alive.policy == "fixed" and not spec.cold_start_empirical_s
    memo: dict[tuple[object, ...], tuple[int, dict[str, Any], int]] = {}
    totals = DayResult()
    kinds: list[list[Any]] = []
    """[day result, how many days it stands for]."""
    for d in range(spec.days):
        start = d * DAY_S
        traffic = day_traffic(spec, d)
        key = None
        if memo_allowed and traffic.key is not None:
            key = (traffic.key, sim.state_key(start))
        if key is not None and key in memo:
            index, end_state, from_day = memo[key]
            sim.restore(end_state, (d - from_day) * DAY_S)
            kinds[index][1] += 1
            result = kinds[index][0]
        else:
            lat = latencies(spec.model_latency, traffic.arrivals.size, (spec.traffic.seed, traffic.key or d))
            for t, latency in zip((traffic.arrivals + start).tolist(), lat.tolist(), strict=True):
                sim.arrive(pool, t, latency)
            result = sim.close_period(start + DAY_S)[pool]
            result.latency_ms_sum = float(lat.sum() * 1000)
            kinds.append([result, 1])
            if key is not None:
                memo[key] = (len(kinds) - 1, sim.snapshot(), d)
        totals.add(result)
    parts = [(r.response_times(), n) for r, n in kinds]
    response = np.concatenate([r for r, _ in parts]) if parts else np.empty(0)
    weights = (
        np.concatenate([np.full(r.size, n, dtype=np.float64) for r, n in parts]) if parts else np.empty(0)
    )
    return SimulationResult(spec, float(spec.days), totals, response, weights, len(kinds))


def _simulate_fleet(spec: SimulationSpec) -> SimulationResult:
    """Day by day (arrivals are split among endpoints at random, so no two days are alike)."""
    fleet = spec.fleet
    assert fleet is not None
    sim = MachineSim(fleet.memory_budget_mb)
    draws = cold_start_draws(spec)
    pools = [sim.add_variant(pool_config(spec, f"endpoint-{i:04d}"), draws) for i in range(fleet.endpoints)]
    popularity = 1.0 / np.arange(1, fleet.endpoints + 1) ** fleet.zipf_s
    popularity /= popularity.sum()
    rng = np.random.default_rng([spec.traffic.seed, fleet.endpoints])
    per_endpoint = [DayResult() for _ in pools]
    responses: list[np.ndarray] = []
    for d in range(spec.days):
        start = d * DAY_S
        traffic = day_traffic(spec, d)
        owners = rng.choice(fleet.endpoints, size=traffic.arrivals.size, p=popularity).tolist()
        lat = latencies(spec.model_latency, traffic.arrivals.size, (spec.traffic.seed, "fleet", d))
        for t, owner, latency in zip((traffic.arrivals + start).tolist(), owners, lat.tolist(), strict=True):
            sim.arrive(pools[owner], t, latency)
        day = sim.close_period(start + DAY_S)
        for i, pool in enumerate(pools):
            per_endpoint[i].add(day[pool])
            responses.extend(day[pool].response_s)
        lat_by_owner = np.bincount(owners, weights=lat, minlength=fleet.endpoints) if owners else None
        if lat_by_owner is not None:
            for i in range(fleet.endpoints):
                per_endpoint[i].latency_ms_sum += float(lat_by_owner[i] * 1000)
    totals = DayResult()
    for endpoint_result in per_endpoint:
        totals.add(endpoint_result)
    totals.peak_environments = sim.peak_environments
    response = np.concatenate(responses) if responses else np.empty(0)
    result = FleetResult(
        fleet.endpoints, fleet.memory_budget_mb, sim.core.evictions, sim.peak_used_mb, per_endpoint
    )
    return SimulationResult(
        spec, float(spec.days), totals, response, np.ones(response.size), spec.days, result
    )


@dataclass(frozen=True)
class VariantLoad:
    """One variant of a many-endpoint simulation: its scaling config and its traffic."""

    config: PoolConfig
    arrivals: np.ndarray
    """Sorted seconds."""
    latencies: np.ndarray
    cold_start: Callable[[], float]


def simulate_machine(
    variants: Sequence[VariantLoad], memory_budget_mb: int, end: float
) -> tuple[list[DayResult], ScalingCore]:
    """Many variants on one machine sharing ``memory_budget_mb``, from 0 to ``end`` seconds.

    Returns each variant's result (in the order given) and the core (its ``evictions`` and pools'
    stats) at the end.
    """
    sim = MachineSim(memory_budget_mb)
    pools = [sim.add_variant(v.config, v.cold_start) for v in variants]
    if not variants:
        return [], sim.core
    times = np.concatenate([v.arrivals for v in variants])
    owner = np.concatenate([np.full(v.arrivals.size, i) for i, v in enumerate(variants)])
    lat = np.concatenate([v.latencies for v in variants])
    order = np.argsort(times, kind="stable")
    for t, i, latency in zip(times[order].tolist(), owner[order].tolist(), lat[order].tolist(), strict=True):
        sim.arrive(pools[i], t, latency)
    results = sim.close_period(end)
    out = []
    for v, pool in zip(variants, pools, strict=True):
        result = results[pool]
        result.latency_ms_sum = float(v.latencies.sum() * 1000)
        out.append(result)
    return out, sim.core


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float | None:
    if values.size == 0:
        return None
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    index = int(np.searchsorted(cumulative, q / 100 * cumulative[-1], side="left"))
    return float(values[order][min(index, values.size - 1)])
