"""The scaling core: every decision about execution environments, for every variant on a machine.

``ScalingCore.handle(event, now)`` takes one event (an invocation arrived, an environment became
ready or finished, time passed, ...) and returns the actions to carry out (start an environment,
stop one, route a request, reject it). It does no I/O, reads no clock and draws no random numbers:
the same events at the same times give the same actions. The live pools
(:mod:`coldbrew.serving.pools`) carry the actions out with real workers on the real clock; the
simulator (:mod:`coldbrew.simulate.engine`) carries them out under a virtual clock. Nothing else
decides.

The rules, per pool (one variant of one deployment):

- **Admission** (:func:`coldbrew.scaling.admission.admit`): an arrival takes a free environment,
  most recently used first (so the rest stay idle long enough to be released); otherwise, below
  MaxConcurrency, it starts one (a cold start) or, if every environment the limit allows exists or
  is starting, waits for the first one free; past MaxConcurrency it is throttled. A provisioned
  instance takes requests beyond its concurrency (they queue on it, as on a container).
- **Hedged cold starts**: waiting requests take environments in arrival order, so an environment
  that frees up before a cold start is ready serves the request that started it; the new one
  still joins the pool.
- **Keep-alive** (:mod:`coldbrew.scaling.keepalive`): with no pre-warm window, an idle
  environment beyond the pool's minimum is released once idle for ``keepalive_s``, oldest first.
  With a pre-warm window, every environment beyond the minimum is released when the pool goes
  idle, one is started ``prewarm_s`` later and kept to the end of the window.
- **Minimum**: ProvisionedConcurrency environments and provisioned instances are started with the
  pool and replaced when lost; a start that fails is retried after ``MINIMUM_RETRY_S``.
- **Memory budget**: the memory of every environment that exists or is starting (MemorySizeInMB,
  or a provisioned instance's instance type memory) stays within the machine's budget. A cold
  start that does not fit releases idle environments of *other* pools, least recently used first
  and never below their minimum, and only if that makes room; else the request waits for the
  first of its pool's own environments free, or is throttled if its pool has none. A pre-warm
  only uses free room. A load check that does not fit waits until an environment is stopped. A
  deployment whose minimum (ProvisionedConcurrency, or its instances) cannot fit, even after such
  releases, fails before it starts anything; a Reconfigure that raises a minimum beyond what fits
  is refused and changes nothing. The machine is never over-committed. The memory of the
  machine's helpers (the zygotes, reported by ``Helpers``) comes out of the budget first: what
  environments may hold is the budget less that. The budget itself may change (``Budget``: a Ray
  cluster's nodes joining or leaving); a smaller one stops nothing, it only keeps starts out.
- **Room on one place**: where the budget is the sum of places a start must fit in whole (a Ray
  cluster's nodes), a start that fits the budget may find no place with room; the backend then
  says where it could go (``Reclaim``), and the core releases idle environments of other pools
  on the first of those places where that frees enough, by the rule above.
- **Starting together**: a pool with ``start_with`` (a transform job's instances) starts that many
  environments when it is deployed, the load check included, in free memory only.
- **Cores**: on a machine whose environments share its cores (``cpu_slots``), a serverless
  variant runs at most as many invocations at once as keep ``cpu_slots`` cores busy, by the cores
  one of its invocations was measured to use (``Finished.cores``, a moving average); later ones
  wait, still counted against MaxConcurrency, for the first of them to finish, and take the most
  recently used environment then. Environments are not started for requests that wait only for a
  core. More invocations than cores would only share them: each runs no sooner, and every process
  beyond the first few costs the machine's caches (measured with a 2.2 ms forest, 8 clients, 2
  cores: 2.85 ms of CPU per invocation and 674 req/s with eight environments taking turns, 2.75 ms
  and 694 req/s with the rule's three). A variant whose
  invocations use little CPU (they wait on I/O) is held back only as far as its CPU use says, one
  not yet measured not at all (nor any in the simulator, which models no shared cores and reports
  no figure).
- **Retirement**: an environment whose worker is going to exit on its own (its zygote died)
  leaves its pool at once, so no invocation is routed to it; those in flight on it finish, then it
  is stopped. Its pool replaces it as after a loss.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from coldbrew.scaling.admission import Admission, admit
from coldbrew.scaling.keepalive import KeepAlivePolicy, make_policy
from coldbrew.scaling.messages import (
    Action,
    Arrival,
    Budget,
    Close,
    Deploy,
    Drained,
    Event,
    Finished,
    Forget,
    Helpers,
    Lost,
    PoolConfig,
    Purpose,
    Ready,
    Reclaim,
    Reconfigure,
    Refused,
    Reject,
    RejectKind,
    Retire,
    Route,
    Start,
    StartFailed,
    Stop,
    StopReason,
    Tick,
    Warmed,
    WarmFailed,
    Withdrawn,
)

MINIMUM_RETRY_S = 1.0
"""After a minimum environment fails to start (or finds no room), wait this long before retrying."""

CORES_WEIGHT = 0.1
"""The weight of an invocation's measured cores in its pool's moving average: the figure follows
a change of the model's work within twenty or so invocations, and one odd invocation (a CPU-bound
forest's readings go as low as 0.5 when its worker is preempted mid-call) moves it little."""

MIN_CORES = 0.01
"""The least a pool's invocations are taken to use: one that waits on I/O all the time is held
back at ``cpu_slots / MIN_CORES`` invocations at once, that is, in practice never."""


@dataclass(slots=True, eq=False)
class EnvironmentState:
    id: int
    pool: int
    memory_mb: int
    purpose: Purpose
    ready: bool = False
    in_flight: int = 0
    last_used: float = 0.0
    for_request: int | None = None
    """The request whose cold start this is, until it is served (by this one or another)."""
    retiring: bool = False
    """Out of its pool's ``envs`` (``Retire``): finishing what it has in flight, then stopped."""


@dataclass(slots=True)
class PoolStats:
    """Counters a pool's decisions add up, exported as metrics and reported by the simulator."""

    cold_starts: int = 0
    """Arrivals that started an environment for themselves."""
    cold_served: int = 0
    """Invocations served by the environment started for them (metered as cold starts)."""
    hedged: int = 0
    """Cold-starting invocations served by another environment that freed up first."""
    environment_starts: int = 0
    prewarms: int = 0
    evicted: int = 0
    """This pool's environments released for another pool's cold start."""
    throttled: int = 0
    released: int = 0


@dataclass(slots=True, eq=False)
class PoolState:
    id: int
    config: PoolConfig
    policy: KeepAlivePolicy
    envs: dict[int, EnvironmentState] = field(default_factory=dict)
    retiring: dict[int, EnvironmentState] = field(default_factory=dict)
    """Environments that take no new invocation and are stopped once idle (``Retire``). Their
    invocations still count in ``in_flight`` (and so against MaxConcurrency), their memory in the
    budget, but not as environments of the pool: its minimum is made up without them."""
    waiters: dict[int, None] = field(default_factory=dict)
    """Requests waiting for an environment, in arrival order (a dict: ordered, O(1) removal)."""
    dedicated: dict[int, int] = field(default_factory=dict)
    """Waiting request -> the environment starting for it."""
    free: list[EnvironmentState] = field(default_factory=list)
    """With one invocation per environment: the idle ones, least recently used first. An
    environment is appended when it becomes idle, at the latest time yet, so the list stays in
    order and the most recently used is at its end (no scan on the hot path)."""
    in_flight: int = 0
    idle_since: float | None = None
    """When the pool finished its last invocation with nothing waiting; None while busy."""
    prewarm_at: float | None = None
    window_end: float | None = None
    prewarmed: bool = False
    closed: bool = False
    deploying: bool = False
    check_wanted: bool = False
    check_passed: bool = False
    minimum_retry_at: float | None = None
    cores: float | None = None
    """The cores one invocation keeps busy (moving average of ``Finished.cores``); None until
    an invocation reports it."""
    stats: PoolStats = field(default_factory=PoolStats)

    @property
    def on_demand(self) -> bool:
        """Environments start for invocations and are released when idle (serverless variants, and
        the instances of an asynchronous endpoint)."""
        return self.config.serverless or self.config.scale_to_zero

    def ready_count(self) -> int:
        return sum(1 for e in self.envs.values() if e.ready)

    def surplus(self) -> int:
        return len(self.envs) - self.config.min_environments

    @property
    def single(self) -> bool:
        return self.config.environment_concurrency == 1

    def idle_envs(self) -> list[EnvironmentState]:
        """Ready environments serving nothing, least recently used first."""
        if self.single:
            return list(self.free)
        return sorted((e for e in self.envs.values() if e.ready and e.in_flight == 0), key=_last_used)


def _freeing(
    candidates: Iterable[tuple[PoolState, EnvironmentState]], needed_mb: int
) -> list[tuple[PoolState, EnvironmentState]] | None:
    """The first of ``candidates`` (in their order) that free at least ``needed_mb`` together;
    None if all of them would not."""
    chosen: list[tuple[PoolState, EnvironmentState]] = []
    freed = 0
    for owner, env in candidates:
        if freed >= needed_mb:
            break
        chosen.append((owner, env))
        freed += env.memory_mb
    return chosen if freed >= needed_mb else None


def _last_used(env: EnvironmentState) -> float:
    return env.last_used


@dataclass(frozen=True)
class BudgetWording:
    """How the core's messages name the memory budget and say how to get more of it."""

    subject: str
    """Its owner at the start of a sentence."""
    whose: str
    source: str
    """Where the budget comes from, in parentheses after it."""
    grow: str
    """What gives more of it, after "or"."""


MACHINE_BUDGET = BudgetWording(
    "The machine's", "this machine's", "COLDBREW_MEMORY_BUDGET_MB", "raise COLDBREW_MEMORY_BUDGET_MB"
)
CLUSTER_BUDGET = BudgetWording(
    "The Ray cluster's", "the Ray cluster's", "the memory of its nodes", "add a node to the Ray cluster"
)
"""A budget that follows a cluster's nodes (``Budget``), with no COLDBREW_MEMORY_BUDGET_MB."""


class ScalingCore:
    """The state of every pool on one machine and the rules that change it (module docstring)."""

    def __init__(
        self, memory_budget_mb: int, max_starting: int | None = None, cpu_slots: int | None = None
    ) -> None:
        if max_starting is not None and max_starting < 1:
            raise ValueError(f"max_starting must be at least 1, not {max_starting}")
        if cpu_slots is not None and cpu_slots < 1:
            raise ValueError(f"cpu_slots must be at least 1, not {cpu_slots}")
        self.memory_budget_mb = memory_budget_mb
        self.cpu_slots = cpu_slots
        """The cores a serverless variant's running invocations may keep busy together (the
        machine's cores, and one more to cover each one's moments off the CPU); None: as many run
        as have an environment (environments do not share cores: a Ray cluster, the simulator)."""
        self.max_starting = max_starting
        """At most this many environments of one serverless variant start at once; the requests
        that would have started more wait for the first free one, and more are started as starts
        finish while requests still wait (``admit``, ``_serve_waiters``). None: one start per
        waiting request."""
        self.wording = MACHINE_BUDGET
        """How messages name the budget, and what raises it."""
        self.used_mb = 0
        self.helpers_mb = 0
        """Memory of the helpers environments are started from (zygotes): out of the budget."""
        self.evictions = 0
        self.pools: dict[int, PoolState] = {}
        self.envs: dict[int, EnvironmentState] = {}
        self._pool_ids = itertools.count(1)
        self._env_ids = itertools.count(1)
        self._active: set[int] = set()
        """Pools that may need a tick: they hold environments, a pre-warm or a minimum."""
        self._waiting_for_room: dict[int, None] = {}
        """Pools whose load check waits for room in the budget, in the order they asked."""
        self._room_changed = False
        """Memory was released or an environment became evictable: try the waiting load checks."""
        self._hint = math.inf
        self._handlers: dict[type, Callable[[Any, float, list[Action]], None]] = {
            Deploy: self._deploy,
            Reconfigure: self._reconfigure,
            Close: self._close,
            Forget: self._forget,
            Arrival: self._arrival,
            Withdrawn: self._withdrawn,
            Ready: self._ready,
            StartFailed: self._start_failed,
            Finished: self._finished,
            Lost: self._lost,
            Retire: self._retire,
            Helpers: self._helpers,
            Budget: self._budget,
            Reclaim: self._reclaim,
            Tick: self._tick,
        }

    @property
    def free_mb(self) -> int:
        return self.memory_budget_mb - self.helpers_mb - self.used_mb

    # --- the interface -------------------------------------------------------------------------

    def add_pool(self, config: PoolConfig) -> int:
        """Register a pool; it starts nothing until ``Deploy``. Raises ValueError for a bad policy name."""
        policy = make_policy(config.keepalive, config.idle_timeout_s)
        pool = PoolState(next(self._pool_ids), config, policy)
        self.pools[pool.id] = pool
        return pool.id

    def handle(self, event: Event, now: float) -> list[Action]:
        """Apply one event at ``now`` and return the actions it calls for, in order."""
        out: list[Action] = []
        self._handlers[type(event)](event, now, out)
        if self._room_changed:
            self._room_changed = False
            self._place_waiting_for_room(now, out)
        return out

    def next_wakeup(self) -> float:
        """The earliest time a ``Tick`` may change something (``inf`` if none), from a full scan."""
        self._hint = math.inf
        wake = math.inf
        for pool_id in list(self._active):
            pool = self.pools.get(pool_id)
            if pool is None or pool.closed:
                self._active.discard(pool_id)
                continue
            at = self._pool_wakeup(pool)
            if at == math.inf and not pool.envs and pool.config.min_environments == 0:
                self._active.discard(pool_id)
            wake = min(wake, at)
        return wake

    def take_wakeup_hint(self) -> float:
        """The earliest deadline created since the last call (or ``next_wakeup``); cheap, for the
        hot path: a driver keeps its timer at the minimum of this and its last full scan."""
        hint, self._hint = self._hint, math.inf
        return hint

    # --- pool lifecycle ------------------------------------------------------------------------

    def _deploy(self, event: Deploy, now: float, out: list[Action]) -> None:
        pool = self.pools[event.pool]
        pool.deploying = True
        pool.check_wanted = event.check and pool.config.min_environments == 0
        self._active.add(pool.id)
        refusal = self._minimum_refusal(pool, pool.config)
        if refusal is not None:
            # Refused before anything starts: no environment of another pool is evicted for a
            # deployment that could not run anyway.
            pool.deploying = False
            out.append(WarmFailed(pool.id, refusal))
            return
        self._keep_minimum(pool, now, out)
        if pool.check_wanted:
            self._start_check(pool, now, out)
        self._start_together(pool, now, out)
        self._check_warmed(pool, out)

    def _reconfigure(self, event: Reconfigure, now: float, out: list[Action]) -> None:
        pool = self.pools.get(event.pool)
        if pool is None:
            return
        old = pool.config
        if event.config.min_environments > old.min_environments:
            refusal = self._minimum_refusal(pool, event.config)
            if refusal is not None:
                out.append(Refused(pool.id, refusal))
                return
        pool.config = event.config
        if (old.keepalive, old.idle_timeout_s) != (event.config.keepalive, event.config.idle_timeout_s):
            pool.policy = make_policy(event.config.keepalive, event.config.idle_timeout_s)
            pool.prewarm_at = pool.window_end = None
        self._active.add(pool.id)
        self._keep_minimum(pool, now, out)
        self._serve_waiters(pool, now, out)
        if not pool.on_demand:
            # Fewer instances: idle ones beyond the count go now, busy ones when they finish.
            for env in pool.idle_envs()[: max(0, pool.surplus())]:
                pool.stats.released += 1
                self._stop(pool, env, StopReason.IDLE, out)
        # A lower minimum or a new keep-alive moves the release times.
        self._hint = min(self._hint, self._pool_wakeup(pool))

    def _close(self, event: Close, now: float, out: list[Action]) -> None:
        pool = self.pools.get(event.pool)
        if pool is None:
            return
        pool.closed = True
        self._waiting_for_room.pop(pool.id, None)
        for request in list(pool.waiters):
            out.append(Reject(request, RejectKind.CLOSED, self._closed_message(pool)))
        pool.waiters.clear()
        pool.dedicated.clear()
        for env in list(pool.envs.values()):
            if env.ready and env.in_flight == 0:
                self._stop(pool, env, StopReason.CLOSED, out)
        self._drained_if_empty(pool, out)

    def _forget(self, event: Forget, now: float, out: list[Action]) -> None:
        pool = self.pools.get(event.pool)
        if pool is None:
            return
        if not pool.closed:
            self._close(Close(pool.id), now, out)
        for env in [*pool.envs.values(), *pool.retiring.values()]:
            self._stop(pool, env, StopReason.CLOSED, out)
        self._drained_if_empty(pool, out)

    def _drained_if_empty(self, pool: PoolState, out: list[Action]) -> None:
        if pool.closed and not pool.envs and not pool.retiring and pool.id in self.pools:
            del self.pools[pool.id]
            self._active.discard(pool.id)
            out.append(Drained(pool.id))

    # --- invocations ---------------------------------------------------------------------------

    def _arrival(self, event: Arrival, now: float, out: list[Action]) -> None:
        pool = self.pools.get(event.pool)
        if pool is None or pool.closed:
            message = "The variant is being replaced; retry the request."
            if pool is not None:
                message = self._closed_message(pool)
            out.append(Reject(event.request, RejectKind.CLOSED, message))
            return
        if pool.idle_since is not None:
            pool.policy.on_arrival(now)
            pool.idle_since = None
            pool.prewarm_at = pool.window_end = None
            # The idle time just learned may shorten the keep-alive of the environments left idle.
            self._hint = min(self._hint, self._pool_wakeup(pool))
        config = pool.config
        cpu_limit = self.cpu_limit(pool)
        # A free environment is not enough when what still runs on retiring environments (they
        # count, and their replacements are free) is MaxConcurrency already: admission decides.
        at_limit = config.serverless and pool.in_flight >= config.max_concurrency
        held = at_limit or (cpu_limit is not None and pool.in_flight >= cpu_limit)
        env = None if held else self._free_environment(pool)
        if env is None and not pool.on_demand:
            instances = [e for e in pool.envs.values() if e.ready]
            if instances:
                env = min(instances, key=lambda e: e.in_flight)
        if env is not None:
            env.in_flight += 1
            pool.in_flight += 1
            out.append(Route(event.request, env.id, cold=False))
            return
        ready = pool.ready_count()
        starting = len(pool.envs) - ready
        if config.serverless:
            decision = admit(
                idle=0,
                live=ready,
                starting=starting,
                concurrent=pool.in_flight + len(pool.waiters),
                max_concurrency=config.max_concurrency,
                max_starting=self.max_starting,
            )
            if (
                decision is Admission.COLD_START
                and cpu_limit is not None
                and pool.in_flight + starting >= cpu_limit
            ):
                # What runs and what starts already keeps the cores busy: it waits for a core,
                # which an environment of its own would not give it any sooner.
                decision = Admission.WAIT
        else:
            full = ready + starting >= config.max_environments
            decision = Admission.WAIT if full else Admission.COLD_START
        if decision is Admission.THROTTLE:
            pool.stats.throttled += 1
            out.append(
                Reject(
                    event.request,
                    RejectKind.THROTTLED,
                    f"Endpoint {config.endpoint} variant {config.variant} is at its MaxConcurrency of "
                    f"{config.max_concurrency}; retry with backoff or raise MaxConcurrency.",
                )
            )
            return
        if decision is Admission.COLD_START:
            refusal = self._make_room(pool, now, out, evict=True)
            if refusal is None:
                env = self._new_environment(pool, Purpose.DEMAND, now, out)
                env.for_request = event.request
                pool.dedicated[event.request] = env.id
                pool.stats.cold_starts += 1
            elif not pool.envs:
                pool.stats.throttled += 1
                out.append(Reject(event.request, RejectKind.THROTTLED, refusal))
                return
            # else no room for another, but the pool's own environments free up in a moment: a
            # burst that fills the budget waits for them rather than being throttled.
        pool.waiters[event.request] = None

    def _withdrawn(self, event: Withdrawn, now: float, out: list[Action]) -> None:
        pool = self.pools.get(event.pool)
        if pool is None or event.request not in pool.waiters:
            return
        del pool.waiters[event.request]
        env_id = pool.dedicated.pop(event.request, None)
        if env_id is not None and env_id in pool.envs:
            pool.envs[env_id].for_request = None  # it still joins the pool when ready
        self._idle_if_quiet(pool, now, out)

    def _ready(self, event: Ready, now: float, out: list[Action]) -> None:
        env = self.envs.get(event.env)
        if env is None:
            return
        pool = self.pools[env.pool]
        env.ready = True
        env.last_used = now
        if pool.closed:
            self._stop(pool, env, StopReason.CLOSED, out)
            self._drained_if_empty(pool, out)
            return
        if env.purpose is Purpose.CHECK:
            pool.check_passed = True
        request = env.for_request
        env.for_request = None
        if request is not None and request in pool.waiters:
            del pool.waiters[request]
            del pool.dedicated[request]
            env.in_flight = 1
            pool.in_flight += 1
            pool.stats.cold_served += 1
            out.append(Route(request, env.id, cold=True))
        self._hand_to_waiters(pool, env, out)
        if env.in_flight == 0 and pool.single:
            pool.free.append(env)
        self._serve_waiters(pool, now, out)
        self._check_warmed(pool, out)
        self._hint = min(self._hint, now + pool.policy.windows(now).keepalive_s)
        self._room_changed = self._room_changed or (env.in_flight == 0 and bool(self._waiting_for_room))

    def _start_failed(self, event: StartFailed, now: float, out: list[Action]) -> None:
        env = self.envs.get(event.env)
        if env is None:
            return
        pool = self.pools[env.pool]
        self._remove(pool, env)
        if pool.closed:
            self._drained_if_empty(pool, out)
            return
        message = f"The model failed to load on a cold start: {event.reason}"
        if env.for_request is not None and env.for_request in pool.waiters:
            del pool.waiters[env.for_request]
            pool.dedicated.pop(env.for_request, None)
            out.append(Reject(env.for_request, RejectKind.LOAD_FAILED, message))
        if pool.envs and pool.waiters:
            # Others run or start: the waiters get starts of their own again (within the limits).
            self._serve_waiters(pool, now, out)
        if not pool.envs:
            # Nothing else is running or starting: whoever waits would wait for ever.
            for request in pool.waiters:
                out.append(Reject(request, RejectKind.LOAD_FAILED, message))
            pool.waiters.clear()
            pool.dedicated.clear()
        if pool.deploying and env.purpose in (Purpose.MINIMUM, Purpose.CHECK):
            pool.deploying = False
            out.append(WarmFailed(pool.id, event.reason))
        elif env.purpose is Purpose.MINIMUM:
            pool.minimum_retry_at = now + MINIMUM_RETRY_S
            self._hint = min(self._hint, pool.minimum_retry_at)
        self._idle_if_quiet(pool, now, out)

    def _finished(self, event: Finished, now: float, out: list[Action]) -> None:
        env = self.envs.get(event.env)
        if env is None:
            return  # lost or stopped while the invocation ran
        pool = self.pools[env.pool]
        env.in_flight -= 1
        env.last_used = now
        pool.in_flight -= 1
        if event.cores is not None:
            cores = max(MIN_CORES, event.cores)
            pool.cores = cores if pool.cores is None else pool.cores + CORES_WEIGHT * (cores - pool.cores)
        if env.retiring:
            if env.in_flight == 0:
                self._stop(pool, env, StopReason.RETIRED, out)
                self._drained_if_empty(pool, out)
            if not pool.closed:
                # A request may be waiting for the memory the retired one held.
                self._serve_waiters(pool, now, out)
                self._idle_if_quiet(pool, now, out)
            return
        if pool.closed:
            if env.in_flight == 0:
                self._stop(pool, env, StopReason.CLOSED, out)
                self._drained_if_empty(pool, out)
            return
        self._hand_to_waiters(pool, env, out)
        if pool.waiters:
            self._serve_waiters(pool, now, out)
        if env.in_flight == 0 and not pool.on_demand and pool.surplus() > 0:
            # DesiredInstanceCount was lowered: an instance beyond it goes once it is idle.
            pool.stats.released += 1
            self._stop(pool, env, StopReason.IDLE, out)
            self._idle_if_quiet(pool, now, out)
            return
        if env.in_flight == 0 and pool.single:
            pool.free.append(env)
        self._idle_if_quiet(pool, now, out)
        if env.in_flight == 0:
            self._hint = min(self._hint, now + pool.policy.windows(now).keepalive_s)
            # An idle environment can be evicted for a load check waiting for room.
            self._room_changed = self._room_changed or bool(self._waiting_for_room)

    def _lost(self, event: Lost, now: float, out: list[Action]) -> None:
        env = self.envs.get(event.env)
        if env is None:
            return
        pool = self.pools[env.pool]
        pool.in_flight -= env.in_flight
        self._remove(pool, env)
        if pool.closed:
            self._drained_if_empty(pool, out)
            return
        self._keep_minimum(pool, now, out)
        self._serve_waiters(pool, now, out)
        self._idle_if_quiet(pool, now, out)

    def _retire(self, event: Retire, now: float, out: list[Action]) -> None:
        env = self.envs.get(event.env)
        # One still starting is retired once it is ready: until then nothing is routed to it.
        if env is None or env.retiring or not env.ready:
            return
        pool = self.pools[env.pool]
        if env.in_flight == 0:
            self._stop(pool, env, StopReason.RETIRED, out)
            if pool.closed:
                self._drained_if_empty(pool, out)
                return
        else:
            if pool.single and env in pool.free:
                pool.free.remove(env)
            del pool.envs[env.id]
            env.retiring = True
            pool.retiring[env.id] = env
            if pool.closed:
                return
        self._keep_minimum(pool, now, out)
        self._serve_waiters(pool, now, out)
        self._idle_if_quiet(pool, now, out)

    def _helpers(self, event: Helpers, now: float, out: list[Action]) -> None:
        # Helpers that grow take nothing from environments that exist (they fit when started);
        # helpers that shrink (an idle zygote stopped) make room a waiting load check may use.
        if event.mb < self.helpers_mb:
            self._room_changed = True
        self.helpers_mb = max(0, event.mb)

    def _budget(self, event: Budget, now: float, out: list[Action]) -> None:
        # A budget that grows (a node joined) is room a waiting load check may use; one that
        # shrinks (a node left: its environments are lost with it) stops nothing that exists,
        # it only keeps new starts out until enough is released.
        if event.mb > self.memory_budget_mb:
            self._room_changed = True
        self.memory_budget_mb = max(0, event.mb)

    # --- time ----------------------------------------------------------------------------------

    def _reclaim(self, event: Reclaim, now: float, out: list[Action]) -> None:
        env = self.envs.get(event.env)
        if env is None or env.ready:
            return  # started meanwhile, or given up: nothing waits any more
        pool = self.pools[env.pool]
        if pool.config.preemptible:
            return  # a job's environment waits for room; it never releases an endpoint's
        evictable = self._evictable(pool)
        for place in event.places:
            on_place = set(place.envs)
            victims = _freeing(((o, e) for o, e in evictable if e.id in on_place), place.short_mb)
            if victims is None:
                continue
            for owner, victim in victims:
                self.evictions += 1
                owner.stats.evicted += 1
                self._stop(owner, victim, StopReason.EVICTED, out)
            return

    def _tick(self, event: Tick, now: float, out: list[Action]) -> None:
        for pool_id in list(self._active):
            pool = self.pools.get(pool_id)
            if pool is None or pool.closed:
                continue
            if pool.minimum_retry_at is not None and now >= pool.minimum_retry_at:
                pool.minimum_retry_at = None
                self._keep_minimum(pool, now, out)
            if pool.on_demand:
                self._apply_keepalive(pool, now, out)

    def _apply_keepalive(self, pool: PoolState, now: float, out: list[Action]) -> None:
        if pool.prewarm_at is not None and pool.window_end is not None:
            if now >= pool.window_end:
                pool.prewarm_at = pool.window_end = None
                self._release_idle(pool, now, out, everything=True)
            elif now >= pool.prewarm_at and not pool.prewarmed:
                pool.prewarmed = True
                if not pool.envs and self._make_room(pool, now, out, evict=False) is None:
                    pool.stats.prewarms += 1
                    self._new_environment(pool, Purpose.PREWARM, now, out)
            return
        self._release_idle(pool, now, out, everything=False)

    def _release_idle(self, pool: PoolState, now: float, out: list[Action], everything: bool) -> None:
        surplus = pool.surplus()
        if surplus <= 0:
            return
        keepalive_s = pool.policy.windows(now).keepalive_s
        for env in pool.idle_envs():
            if surplus <= 0 or (not everything and env.last_used + keepalive_s > now):
                break
            pool.stats.released += 1
            self._stop(pool, env, StopReason.IDLE, out)
            surplus -= 1

    def _pool_wakeup(self, pool: PoolState) -> float:
        wake = math.inf if pool.minimum_retry_at is None else pool.minimum_retry_at
        if not pool.on_demand:
            return wake
        if pool.prewarm_at is not None and pool.window_end is not None:
            at = pool.window_end if pool.prewarmed or pool.envs else pool.prewarm_at
            return min(wake, at)
        if pool.surplus() > 0:
            idle = [e.last_used for e in pool.envs.values() if e.ready and e.in_flight == 0]
            if idle:
                wake = min(wake, min(idle) + pool.policy.windows(min(idle)).keepalive_s)
        return wake

    # --- helpers -------------------------------------------------------------------------------

    def cpu_limit(self, pool: PoolState) -> int | None:
        """How many of the pool's invocations may run at once to keep ``cpu_slots`` cores busy;
        None: no limit (no cores to share, not a serverless variant, or not yet measured)."""
        if self.cpu_slots is None or pool.cores is None or not pool.config.serverless:
            return None
        return max(1, round(self.cpu_slots / pool.cores))

    def _free_environment(self, pool: PoolState) -> EnvironmentState | None:
        """The most recently used ready environment with room, if any."""
        if pool.single:
            return pool.free.pop() if pool.free else None
        best: EnvironmentState | None = None
        limit = pool.config.environment_concurrency
        for env in pool.envs.values():
            if env.ready and env.in_flight < limit and (best is None or env.last_used > best.last_used):
                best = env
        return best

    def _hand_to_waiters(self, pool: PoolState, env: EnvironmentState, out: list[Action]) -> None:
        limit = pool.config.environment_concurrency
        if not pool.config.serverless and pool.waiters:
            # Requests that waited while every instance was starting queue on the instances that
            # are ready, least loaded first, as later arrivals do: none is overtaken.
            instances = [e for e in pool.envs.values() if e.ready]
            while pool.waiters:
                request = next(iter(pool.waiters))
                del pool.waiters[request]
                starting = pool.dedicated.pop(request, None)
                if starting is not None and starting in pool.envs:
                    pool.envs[starting].for_request = None
                target = min(instances, key=lambda e: e.in_flight)
                target.in_flight += 1
                pool.in_flight += 1
                out.append(Route(request, target.id, cold=False))
            return
        cpu_limit = self.cpu_limit(pool)
        while pool.waiters and env.in_flight < limit and (cpu_limit is None or pool.in_flight < cpu_limit):
            request = next(iter(pool.waiters))
            del pool.waiters[request]
            starting = pool.dedicated.pop(request, None)
            if starting is not None and starting in pool.envs:
                pool.envs[starting].for_request = None  # hedged: its start joins the pool idle
                pool.stats.hedged += 1
            env.in_flight += 1
            pool.in_flight += 1
            out.append(Route(request, env.id, cold=False))

    def _serve_waiters(self, pool: PoolState, now: float, out: list[Action]) -> None:
        """Start environments for waiting requests that have none coming (after a loss, a failed
        start or a reconfiguration, and as starts end or environments free up while requests still
        wait), within MaxConcurrency, the budget and, for a serverless variant, ``max_starting``."""
        cpu_limit = self.cpu_limit(pool)
        wanted = len(pool.waiters)
        if cpu_limit is not None:
            # Requests that wait only for a core (a finish, a loss or a higher limit freed one)
            # take the environments that are free first, and no start is made for them.
            while pool.waiters and pool.free and pool.in_flight < cpu_limit:
                self._hand_to_waiters(pool, pool.free.pop(), out)
            wanted = min(wanted, max(0, cpu_limit - pool.in_flight))
        starting = len(pool.envs) - pool.ready_count()
        limit = self.max_starting if pool.config.serverless and self.max_starting else math.inf
        for request in list(pool.waiters):
            if starting >= min(wanted, limit) or len(pool.envs) >= pool.config.max_environments:
                return
            if request in pool.dedicated:
                continue
            if self._make_room(pool, now, out, evict=True) is not None:
                return
            env = self._new_environment(pool, Purpose.DEMAND, now, out)
            env.for_request = request
            pool.dedicated[request] = env.id
            pool.stats.cold_starts += 1
            starting += 1

    def _idle_if_quiet(self, pool: PoolState, now: float, out: list[Action]) -> None:
        if pool.idle_since is not None or pool.in_flight or pool.waiters or pool.closed:
            return
        pool.idle_since = now
        pool.policy.on_idle(now)
        if not pool.on_demand:
            return
        windows = pool.policy.windows(now)
        if windows.prewarm_s > 0:
            self._release_idle(pool, now, out, everything=True)
            pool.prewarm_at = now + windows.prewarm_s
            pool.window_end = pool.prewarm_at + windows.keepalive_s
            pool.prewarmed = False
            self._active.add(pool.id)
            self._hint = min(self._hint, pool.prewarm_at)

    def _keep_minimum(self, pool: PoolState, now: float, out: list[Action]) -> None:
        missing = pool.config.min_environments - len(pool.envs)
        for _ in range(max(0, missing)):
            refusal = self._make_room(pool, now, out, evict=True)
            if refusal is not None:
                if pool.deploying:
                    pool.deploying = False
                    out.append(WarmFailed(pool.id, f"its minimum environments do not fit: {refusal}"))
                else:
                    pool.minimum_retry_at = now + MINIMUM_RETRY_S
                    self._hint = min(self._hint, pool.minimum_retry_at)
                return
            self._new_environment(pool, Purpose.MINIMUM, now, out)

    def _start_together(self, pool: PoolState, now: float, out: list[Action]) -> None:
        if pool.id in self._waiting_for_room:
            return  # the check goes first, when memory frees up
        wanted = min(pool.config.start_with, pool.config.max_environments)
        for _ in range(wanted - len(pool.envs)):
            if self._make_room(pool, now, out, evict=False) is not None:
                return
            self._new_environment(pool, Purpose.PREWARM, now, out)

    def _start_check(self, pool: PoolState, now: float, out: list[Action]) -> None:
        if pool.config.memory_mb > self.memory_budget_mb:
            pool.deploying = False
            out.append(WarmFailed(pool.id, f"no room to check that the model loads: {self._too_big(pool)}"))
            return
        if self._make_room(pool, now, out, evict=True) is not None:
            self._waiting_for_room[pool.id] = None  # placed when an environment is stopped
            return
        self._new_environment(pool, Purpose.CHECK, now, out)

    def _place_waiting_for_room(self, now: float, out: list[Action]) -> None:
        for pool_id in list(self._waiting_for_room):
            pool = self.pools.get(pool_id)
            if pool is None or not pool.deploying:
                del self._waiting_for_room[pool_id]
                continue
            if self._make_room(pool, now, out, evict=True) is not None:
                return
            del self._waiting_for_room[pool_id]
            self._new_environment(pool, Purpose.CHECK, now, out)

    def _check_warmed(self, pool: PoolState, out: list[Action]) -> None:
        if not pool.deploying:
            return
        if pool.ready_count() < pool.config.min_environments:
            return
        if pool.check_wanted and not pool.check_passed:
            return
        pool.deploying = False
        out.append(Warmed(pool.id))

    def _new_environment(
        self, pool: PoolState, purpose: Purpose, now: float, out: list[Action]
    ) -> EnvironmentState:
        """Add a starting environment (its memory already reserved) and ask for its start."""
        env = EnvironmentState(next(self._env_ids), pool.id, pool.config.memory_mb, purpose, last_used=now)
        pool.envs[env.id] = env
        self.envs[env.id] = env
        pool.stats.environment_starts += 1
        self._active.add(pool.id)
        out.append(Start(env.id, pool.id, purpose))
        return env

    def _make_room(self, pool: PoolState, now: float, out: list[Action], evict: bool) -> str | None:
        """Reserve one environment's memory for ``pool``; None if done, else why it does not fit."""
        need = pool.config.memory_mb
        if need > self.memory_budget_mb:
            return self._too_big(pool)
        if need > self.free_mb:
            evict = evict and not pool.config.preemptible
            victims = self._eviction_candidates(pool, need - self.free_mb) if evict else None
            if victims is None:
                helpers = f" (zygotes hold {self.helpers_mb} MB of it)" if self.helpers_mb else ""
                w = self.wording
                return (
                    f"{w.subject} memory budget of {self.memory_budget_mb} MB{helpers} is held by "
                    f"busy environments; retry with backoff, or {w.grow}."
                )
            for owner, victim in victims:
                self.evictions += 1
                owner.stats.evicted += 1
                self._stop(owner, victim, StopReason.EVICTED, out)
        self.used_mb += need
        return None

    def _too_big(self, pool: PoolState) -> str:
        return (
            f"MemorySizeInMB {pool.config.memory_mb} is larger than {self.wording.whose} memory budget of "
            f"{self.memory_budget_mb} MB ({self.wording.source})."
        )

    def _eviction_candidates(
        self, requester: PoolState, needed_mb: int
    ) -> list[tuple[PoolState, EnvironmentState]] | None:
        """Environments of other pools to release, freeing at least ``needed_mb``; None if all of
        them together would not."""
        return _freeing(self._evictable(requester), needed_mb)

    def _evictable(self, requester: PoolState) -> list[tuple[PoolState, EnvironmentState]]:
        """What a start of ``requester`` may release, in order: preemptible pools' environments
        first, busy or not (a job yields to the endpoints), then other pools' idle ones beyond
        their minimum, least recently used first."""
        candidates: list[tuple[bool, float, int, PoolState, EnvironmentState]] = []
        for pool_id in self._active:
            pool = self.pools.get(pool_id)
            if pool is None or pool is requester:
                continue
            if pool.config.preemptible:
                # Idle ones before busy ones: a busy one costs the job an invocation to retry.
                envs = sorted(pool.envs.values(), key=lambda e: (e.in_flight > 0, e.last_used))
                candidates += [(False, float(e.in_flight > 0), e.id, pool, e) for e in envs]
                continue
            for env in pool.idle_envs()[: max(0, pool.surplus())]:
                candidates.append((True, env.last_used, env.id, pool, env))
        candidates.sort(key=lambda c: (c[0], c[1], c[2]))
        return [(pool, env) for _, _, _, pool, env in candidates]

    def _minimum_refusal(self, pool: PoolState, config: PoolConfig) -> str | None:
        """Why ``config``'s minimum environments cannot all be held by ``pool`` now, counting the
        memory that is free and what releasing other pools' idle environments would free; None
        if they fit."""
        missing = config.min_environments - len(pool.envs)
        if missing <= 0:
            return None
        need = missing * config.memory_mb
        room = self.free_mb
        if not config.preemptible:
            room += sum(env.memory_mb for _, env in self._evictable(pool))
        if need <= room:
            return None
        if config.serverless:
            what = (
                f"its ProvisionedConcurrency of {config.min_environments} "
                f"{_plural(config.min_environments, 'environment')} of {config.memory_mb} MB (MemorySizeInMB)"
            )
            fix = "lower ProvisionedConcurrency or MemorySizeInMB"
        else:
            each = " each" if config.min_environments > 1 else ""
            what = (
                f"its {config.min_environments} {_plural(config.min_environments, 'instance')} of "
                f"{config.memory_mb} MB{each} (the memory of its instance type)"
            )
            fix = "lower the instance count, choose a smaller instance type"
        more = " more" if pool.envs else ""
        held = ""
        if self.helpers_mb:
            held = f"; zygotes hold {self.helpers_mb} MB"
        if room < self.memory_budget_mb - self.helpers_mb:
            held += (
                "; the rest is held by other environments (those of a configuration this one "
                "replaces among them, until it serves)"
            )
        verb = "needs" if config.min_environments == 1 else "need"
        w = self.wording
        return (
            f"{what} {verb} {need} MB{more}, but {w.whose} memory budget of {self.memory_budget_mb} "
            f"MB ({w.source}) has room for {room} MB{held}. To deploy it, {fix}, "
            f"delete other endpoints, or {w.grow}."
        )

    def _stop(self, pool: PoolState, env: EnvironmentState, reason: StopReason, out: list[Action]) -> None:
        pool.in_flight -= env.in_flight
        self._remove(pool, env)
        out.append(Stop(env.id, reason))

    def _remove(self, pool: PoolState, env: EnvironmentState) -> None:
        # A closed pool stops an environment as it becomes idle, before it joins the free list.
        if env.ready and env.in_flight == 0 and pool.single and env in pool.free:
            pool.free.remove(env)
        pool.envs.pop(env.id, None)
        pool.retiring.pop(env.id, None)
        self.envs.pop(env.id, None)
        self.used_mb -= env.memory_mb
        self._room_changed = True

    @staticmethod
    def _closed_message(pool: PoolState) -> str:
        return f"Variant {pool.config.variant} is being replaced; retry the request."

    # --- for the simulator: reuse of a day's end state ------------------------------------------

    def snapshot(self) -> ScalingCore:
        """A deep copy (the simulator keeps one per distinct simulated day)."""
        clone = copy.copy(self)
        state = copy.deepcopy({k: v for k, v in vars(self).items() if k != "_handlers"})
        vars(clone).update(state)
        clone._handlers = {kind: getattr(clone, method.__name__) for kind, method in self._handlers.items()}
        return clone

    def shift(self, delta: float) -> None:
        """Move every time the state holds ``delta`` later."""
        for pool in self.pools.values():
            for name in ("idle_since", "prewarm_at", "window_end", "minimum_retry_at"):
                value = getattr(pool, name)
                if value is not None:
                    setattr(pool, name, value + delta)
            for env in pool.envs.values():
                env.last_used += delta

    def state_key(self, at: float) -> tuple[object, ...]:
        """The state relative to ``at``: equal keys evolve alike under equal (stateless-policy) events."""

        def rel(x: float | None) -> float | None:
            return None if x is None else round(x - at, 6)

        def pools() -> Iterator[tuple[object, ...]]:
            for pool in self.pools.values():
                yield (
                    pool.id,
                    tuple(
                        (e.ready, e.in_flight, rel(e.last_used), e.purpose, e.for_request is not None)
                        for e in pool.envs.values()
                    ),
                    len(pool.retiring),
                    len(pool.waiters),
                    pool.in_flight,
                    rel(pool.idle_since),
                    rel(pool.prewarm_at),
                    rel(pool.window_end),
                    pool.prewarmed,
                    rel(pool.minimum_retry_at),
                    pool.cores,
                )

        return (self.used_mb, tuple(pools()))


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else noun + "s"
