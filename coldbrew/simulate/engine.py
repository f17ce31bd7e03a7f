"""The event loop of the simulator: one variant's environments under a virtual clock.

Decisions come from serving's own code: :func:`coldbrew.scaling.admission.admit` for each
arrival, and the variant's keep-alive policy (:mod:`coldbrew.scaling.keepalive`) for releasing idle
environments, so what the simulator predicts is what the live pool does:

- an idle environment takes an arrival, most recently used first (the pool's ``_take_ready``);
- otherwise an environment is started; if one frees up first, the waiting arrival takes it (a
  hedged cold start, as the pool does) and the new one joins the pool idle when ready;
- the oldest idle environments beyond ProvisionedConcurrency are released once idle for the
  policy's keep-alive (the pool's ``reap``). A policy with a pre-warm window (``prewarm_s > 0``)
  releases them all when the variant goes idle and starts one again ``prewarm_s`` later.

A month of the staging scenario is 4.5 million arrivals; days with the same arrivals that start
from the same state end the same way, so each distinct (arrivals, state) day is simulated once and
its result reused (``uniform`` traffic with the fixed policy: two distinct days in a month).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coldbrew.scaling.admission import Admission, admit
from coldbrew.scaling.keepalive import KeepAlivePolicy
from coldbrew.simulate.spec import DAY_S, SimulationSpec
from coldbrew.simulate.traffic import day_traffic, latencies, trace_traffic


def make_policy(name: str, idle_timeout_s: float) -> KeepAlivePolicy:
    """The live pool's policy by name (``keepalive.make_policy``), or FixedKeepAlive before it existed."""
    from coldbrew.scaling import keepalive

    factory = getattr(keepalive, "make_policy", None)
    if factory is not None:
        policy: KeepAlivePolicy = factory(name, idle_timeout_s)
        return policy
    if name != "fixed":
        raise ValueError(f"keep-alive policy {name!r} is not available; use 'fixed'")
    return keepalive.FixedKeepAlive(idle_timeout_s)


_DONE, _READY, _PREWARM = 0, 1, 2


@dataclass
class DayResult:
    invocations: int = 0
    served: int = 0
    throttled: int = 0
    cold_starts: int = 0
    """Invocations that waited for their own new environment (metered as cold starts)."""
    environment_starts: int = 0
    waited: int = 0
    """Invocations that waited for an environment (their own cold start, or one freeing up)."""
    billed_ms: int = 0
    """Sum over served invocations of the model latency rounded up to the millisecond."""
    latency_ms_sum: float = 0.0
    held_mb_s: float = 0.0
    peak_environments: int = 0
    response_s: list[np.ndarray] = field(default_factory=list)
    """Client-seen latency of each served invocation: waiting, cold start and model time."""

    def response_times(self) -> np.ndarray:
        return np.concatenate(self.response_s) if self.response_s else np.empty(0)


class _Waiter:
    __slots__ = ("arrival", "latency", "served")

    def __init__(self, arrival: float, latency: float) -> None:
        self.arrival = arrival
        self.latency = latency
        self.served = False


class VariantSim:
    """One serverless variant's environments; times are seconds on the virtual clock."""

    def __init__(self, spec: SimulationSpec, policy: KeepAlivePolicy) -> None:
        self.spec = spec
        self.policy = policy
        self.memory_mb = spec.memory_mb
        self.idle: deque[tuple[float, float]] = deque()
        """(last used, release deadline) of idle environments, least recently used first."""
        self.events: list[tuple[float, int, int, Any]] = []
        self.waiters: deque[_Waiter] = deque()
        self.waiting = 0
        self.busy = 0
        self.live = 0
        self.starting = 0
        self.clock = 0.0
        self._held_at = 0.0
        self._seq = itertools.count()
        self._prewarm_generation = 0
        self._idle_since: float | None = None
        """When the variant last went idle (no invocation in flight or waiting); None while busy."""
        self._window_end = math.inf
        self.result = DayResult()
        self._cold_rng = np.random.default_rng(spec.traffic.seed)

    # --- memory-time held ---------------------------------------------------------------------

    def _held(self, t: float) -> None:
        self.result.held_mb_s += (self.live + self.starting) * self.memory_mb * (t - self._held_at)
        self._held_at = t

    def _push(self, t: float, kind: int, payload: Any) -> None:
        heapq.heappush(self.events, (t, next(self._seq), kind, payload))

    # --- environments -------------------------------------------------------------------------

    def _start_env(self, t: float, waiter: _Waiter | None) -> None:
        self._held(t)
        self.starting += 1
        self.result.environment_starts += 1
        draws = self.spec.cold_start_empirical_s
        duration = (
            self.spec.cold_start_s if not draws else float(draws[int(self._cold_rng.integers(len(draws)))])
        )
        self._push(t + duration, _READY, waiter)

    def _serve(self, t: float, waiter_arrival: float, latency: float, cold: bool) -> None:
        self.busy += 1
        r = self.result
        r.served += 1
        r.cold_starts += cold
        r.waited += t > waiter_arrival
        r.billed_ms += math.ceil(round(latency * 1000, 6))
        self._responses.append(t - waiter_arrival + latency)
        self._push(t + latency, _DONE, None)

    def _free(self, t: float, finished: bool) -> None:
        """An environment has nothing to do at ``t``: the first waiter takes it, or it goes idle.

        ``finished``: it has just finished an invocation (else it has just started, unasked for).
        Mirrors ``VariantPool.release`` and ``VariantPool.reap``.
        """
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.served:
                waiter.served = True
                self.waiting -= 1
                self._serve(t, waiter.arrival, waiter.latency, cold=False)
                return
        windows = self.policy.windows(t)
        if not finished and self._idle_since is not None and windows.prewarm_s > 0:
            deadline = self._window_end  # a pre-warmed environment lasts to the end of the window
        else:
            deadline = t + windows.prewarm_s + windows.keepalive_s
        self.idle.append((t, deadline))
        if finished and self.busy == 0 and self.waiting == 0:
            # The variant finished its last in-flight invocation: the policy's "idle" event.
            self._idle_since = t
            self.policy.on_idle(t)
            windows = self.policy.windows(t)
            if windows.prewarm_s > 0:
                # Outside the window the next invocation is expected in, nothing is kept; inside
                # it, one environment is (started again if need be).
                self._release_surplus(t, everything=True)
                self._prewarm_generation += 1
                self._window_end = t + windows.prewarm_s + windows.keepalive_s
                self._push(t + windows.prewarm_s, _PREWARM, self._prewarm_generation)

    def _release_surplus(self, t: float, everything: bool = False) -> None:
        while self.idle and self.live > self.spec.provisioned_concurrency:
            _, deadline = self.idle[0]
            if not everything and deadline > t:
                return
            self.idle.popleft()
            at = t if everything else deadline
            self._held(at)
            self.live -= 1

    def _next_release(self) -> float:
        if self.idle and self.live > self.spec.provisioned_concurrency:
            return self.idle[0][1]
        return math.inf

    def advance(self, t: float) -> None:
        """Run every event and release due by ``t``, in time order."""
        while True:
            next_event = self.events[0][0] if self.events else math.inf
            next_release = self._next_release()
            if min(next_event, next_release) > t:
                break
            if next_release < next_event:
                self._release_surplus(next_release)
                continue
            at, _, kind, payload = heapq.heappop(self.events)
            self.clock = at
            if kind == _DONE:
                self.busy -= 1
                self._free(at, finished=True)
            elif kind == _READY:
                self._held(at)
                self.starting -= 1
                self.live += 1
                self.result.peak_environments = max(self.result.peak_environments, self.live)
                waiter: _Waiter | None = payload
                if waiter is not None and not waiter.served:
                    waiter.served = True
                    self.waiting -= 1
                    self._serve(at, waiter.arrival, waiter.latency, cold=True)
                else:
                    self._free(at, finished=False)
            elif kind == _PREWARM:
                current = payload == self._prewarm_generation and self._idle_since is not None
                if current and self.live == 0 and self.starting == 0:
                    self._start_env(at, None)
        self.clock = max(self.clock, t)

    def arrive(self, t: float, latency: float) -> None:
        self.advance(t)
        self.result.invocations += 1
        if self._idle_since is not None:  # the end of an idle time, as the pool reports it
            self.policy.on_arrival(t)
            self._idle_since = None
            self._prewarm_generation += 1  # a pending pre-warm is moot once traffic is back
        decision = admit(
            idle=len(self.idle),
            live=self.live,
            starting=self.starting,
            concurrent=self.busy + self.waiting,
            max_concurrency=self.spec.max_concurrency,
        )
        if decision is Admission.WARM:
            self.idle.pop()  # most recently used
            self._serve(t, t, latency, cold=False)
        elif decision is Admission.THROTTLE:
            self.result.throttled += 1
        else:
            waiter = _Waiter(t, latency)
            self.waiters.append(waiter)
            self.waiting += 1
            if decision is Admission.COLD_START:
                self._start_env(t, waiter)

    # --- days -----------------------------------------------------------------------------------

    def run(self, arrivals: np.ndarray, lat: np.ndarray, start: float, end: float) -> DayResult:
        self.result = DayResult()
        self._responses: list[float] = []
        self._held_at = start
        for t, latency in zip((arrivals + start).tolist(), lat.tolist(), strict=True):
            self.arrive(t, latency)
        self.advance(end)
        self._held(end)
        self.result.response_s.append(np.asarray(self._responses))
        self.result.latency_ms_sum = float(lat.sum() * 1000)
        return self.result

    def state_key(self, at: float) -> tuple[object, ...]:
        """The state at ``at``, relative to it: equal keys evolve alike under equal arrivals."""

        def rel(x: float) -> float:
            return round(x - at, 6)

        return (
            tuple((rel(u), rel(d)) for u, d in self.idle),
            tuple(
                sorted(
                    (rel(t), k, id(p) if k == _READY and p is not None else 0)
                    for t, _, k, p in self.events
                    if k != _PREWARM
                )
            ),
            tuple((rel(w.arrival), w.latency) for w in self.waiters if not w.served),
            self.busy,
            self.live,
            self.starting,
            None if self._idle_since is None else rel(self._idle_since),
        )

    def shift(self, delta: float) -> None:
        """Move every pending time ``delta`` later (to reuse a simulated day's end state)."""
        self.idle = deque((u + delta, d + delta) for u, d in self.idle)
        self.events = [(t + delta, s, k, p) for t, s, k, p in self.events]
        heapq.heapify(self.events)
        for waiter in self.waiters:
            waiter.arrival += delta
        self.clock += delta
        self._held_at += delta
        if self._idle_since is not None:
            self._idle_since += delta


@dataclass
class SimulationResult:
    spec: SimulationSpec
    days: float
    """Simulated length in days."""
    totals: DayResult
    response_s: np.ndarray
    weights: np.ndarray
    distinct_days: int


def simulate(spec: SimulationSpec, reuse_days: bool = True) -> SimulationResult:
    policy = make_policy(spec.keep_alive.policy, spec.keep_alive.idle_timeout_s)
    sim = VariantSim(spec, policy)
    if spec.traffic.timestamps_file is not None:
        arrivals, length = trace_traffic(spec.traffic.timestamps_file)
        end = length + spec.keep_alive.idle_timeout_s + spec.cold_start_s + 60
        day = sim.run(
            arrivals, latencies(spec.model_latency, arrivals.size, ("trace", spec.traffic.seed)), 0.0, end
        )
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
            _restore(sim, end_state, (d - from_day) * DAY_S)
            kinds[index][1] += 1
            result = kinds[index][0]
        else:
            lat = latencies(spec.model_latency, traffic.arrivals.size, (spec.traffic.seed, traffic.key or d))
            result = sim.run(traffic.arrivals, lat, start, start + DAY_S)
            kinds.append([result, 1])
            if key is not None:
                memo[key] = (len(kinds) - 1, _snapshot(sim), d)
        _add(totals, result)
    parts = [(r.response_times(), n) for r, n in kinds]
    response = np.concatenate([r for r, _ in parts]) if parts else np.empty(0)
    weights = (
        np.concatenate([np.full(r.size, n, dtype=np.float64) for r, n in parts]) if parts else np.empty(0)
    )
    return SimulationResult(spec, float(spec.days), totals, response, weights, len(kinds))


def _snapshot(sim: VariantSim) -> dict[str, Any]:
    return {
        "idle": list(sim.idle),
        "events": list(sim.events),
        "waiters": [(w.arrival, w.latency, w.served) for w in sim.waiters],
        "counts": (sim.waiting, sim.busy, sim.live, sim.starting),
        "clock": sim.clock,
        "held_at": sim._held_at,
        "idle_since": sim._idle_since,
    }


def _restore(sim: VariantSim, state: dict[str, Any], delta: float) -> None:
    # Keys that match never hold a pending start for a waiter (its identity is in the key), so
    # waiters can be copied on their own.
    waiters = []
    for arrival, latency, served in state["waiters"]:
        waiter = _Waiter(arrival, latency)
        waiter.served = served
        waiters.append(waiter)
    sim.idle = deque(state["idle"])
    sim.waiters = deque(waiters)
    sim.events = list(state["events"])
    sim.waiting, sim.busy, sim.live, sim.starting = state["counts"]
    sim.clock, sim._held_at, sim._idle_since = state["clock"], state["held_at"], state["idle_since"]
    sim.shift(delta)


def _add(totals: DayResult, day: DayResult) -> None:
    for name in (
        "invocations",
        "served",
        "throttled",
        "cold_starts",
        "environment_starts",
        "waited",
        "billed_ms",
        "latency_ms_sum",
        "held_mb_s",
    ):
        setattr(totals, name, getattr(totals, name) + getattr(day, name))
    totals.peak_environments = max(totals.peak_environments, day.peak_environments)


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float | None:
    if values.size == 0:
        return None
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    index = int(np.searchsorted(cumulative, q / 100 * cumulative[-1], side="left"))
    return float(values[order][min(index, values.size - 1)])
