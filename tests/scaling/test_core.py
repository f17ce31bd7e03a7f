"""The scaling core under a virtual clock: events in, exact actions out; no threads, no sleeping.

The first tests feed ``ScalingCore.handle`` events at explicit times and compare the actions it
answers with. The last ones replay periodic, bursty and seeded-random traces through a tiny event
loop that only carries actions out (a Start becomes Ready after a while, a Route becomes Finished
after the request's duration, Ticks come when the core's hints say) and check the core's
invariants after every event.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import random
from collections import defaultdict
from collections.abc import Callable

import pytest

from coldbrew.scaling.core import MINIMUM_RETRY_S, PoolState, ScalingCore
from coldbrew.scaling.messages import (
    Action,
    Arrival,
    Close,
    Deploy,
    Drained,
    Event,
    Finished,
    Forget,
    Lost,
    PoolConfig,
    Purpose,
    Ready,
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
from tests.scaling.configs import provisioned, serverless, transform_job

DEMAND, PREWARM, MINIMUM, CHECK = Purpose.DEMAND, Purpose.PREWARM, Purpose.MINIMUM, Purpose.CHECK
IDLE, EVICTED, CLOSED, RETIRED = StopReason.IDLE, StopReason.EVICTED, StopReason.CLOSED, StopReason.RETIRED


def deployed(core: ScalingCore, config: PoolConfig, at: float = 0.0) -> int:
    """A scale-to-zero pool, deployed without a load check (it is Warmed at once)."""
    pool = core.add_pool(config)
    assert core.handle(Deploy(pool, check=False), at) == [Warmed(pool)]
    return pool


def serve_cold(core: ScalingCore, pool: int, request: int, env: int, at: float) -> None:
    """An arrival at ``at`` that cold-starts ``env`` and is routed to it when it is ready, 0.5 s later."""
    assert core.handle(Arrival(pool, request), at) == [Start(env, pool, DEMAND)]
    assert core.handle(Ready(env), at + 0.5) == [Route(request, env, cold=True)]


# --- admission --------------------------------------------------------------------------------


def test_cold_start_then_warm_routing_most_recently_used_first() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless())
    assert core.handle(Arrival(pool, 1), 0.0) == [Start(1, pool, DEMAND)]
    assert core.handle(Arrival(pool, 2), 0.5) == [Start(2, pool, DEMAND)]
    assert core.handle(Ready(1), 2.0) == [Route(1, 1, cold=True)]
    assert core.handle(Ready(2), 2.5) == [Route(2, 2, cold=True)]
    assert core.pools[pool].stats.cold_starts == 2
    assert core.pools[pool].stats.cold_served == 2
    assert core.handle(Finished(1, 1), 3.0) == []
    assert core.handle(Finished(2, 2), 4.0) == []
    # Environment 2 was used last: it takes the next request, and again once it is free.
    assert core.handle(Arrival(pool, 3), 5.0) == [Route(3, 2, cold=False)]
    assert core.handle(Finished(2, 3), 6.0) == []
    assert core.handle(Arrival(pool, 4), 7.0) == [Route(4, 2, cold=False)]
    # While it is busy, the other one serves.
    assert core.handle(Arrival(pool, 5), 7.5) == [Route(5, 1, cold=False)]
    assert core.pools[pool].stats.cold_starts == 2
    assert core.used_mb == 2048


def test_wait_when_every_allowed_environment_exists_or_is_starting() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = core.add_pool(serverless(max_concurrency=1, min_environments=1))
    assert core.handle(Deploy(pool, check=False), 0.0) == [Start(1, pool, MINIMUM)]
    # The only environment MaxConcurrency allows is starting: the request waits for it.
    assert core.handle(Arrival(pool, 1), 0.5) == []
    assert core.pools[pool].stats.cold_starts == 0
    assert core.handle(Ready(1), 2.0) == [Route(1, 1, cold=False), Warmed(pool)]


def test_throttled_past_max_concurrency() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless(variant="v1", max_concurrency=1))
    assert core.handle(Arrival(pool, 1), 0.0) == [Start(1, pool, DEMAND)]
    assert core.handle(Arrival(pool, 2), 0.1) == [
        Reject(
            2,
            RejectKind.THROTTLED,
            "Endpoint ep variant v1 is at its MaxConcurrency of 1; "
            "retry with backoff or raise MaxConcurrency.",
        )
    ]
    assert core.pools[pool].stats.throttled == 1
    # Once the first is served and done, there is room again.
    assert core.handle(Ready(1), 1.0) == [Route(1, 1, cold=True)]
    assert core.handle(Finished(1, 1), 1.5) == []
    assert core.handle(Arrival(pool, 3), 2.0) == [Route(3, 1, cold=False)]


def test_hedged_cold_start_is_served_by_the_environment_free_first() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless(max_concurrency=2))
    assert core.handle(Arrival(pool, 1), 0.0) == [Start(1, pool, DEMAND)]
    assert core.handle(Arrival(pool, 2), 0.1) == [Start(2, pool, DEMAND)]
    assert core.handle(Ready(1), 1.0) == [Route(1, 1, cold=True)]
    # Environment 1 frees up before 2 is ready: it serves request 2, warm.
    assert core.handle(Finished(1, 1), 1.2) == [Route(2, 1, cold=False)]
    state = core.pools[pool]
    assert state.stats.hedged == 1
    # Both environments exist or start: request 3 waits, and takes 2 when it is ready.
    assert core.handle(Arrival(pool, 3), 1.3) == []
    assert core.handle(Ready(2), 2.0) == [Route(3, 2, cold=False)]
    assert core.handle(Finished(2, 3), 2.5) == []
    assert core.handle(Finished(1, 2), 2.6) == []
    assert state.stats.cold_served == 1
    assert state.stats.cold_starts == 2


def test_hedged_environment_joins_the_pool_idle() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless(max_concurrency=2))
    assert core.handle(Arrival(pool, 1), 0.0) == [Start(1, pool, DEMAND)]
    assert core.handle(Arrival(pool, 2), 0.1) == [Start(2, pool, DEMAND)]
    assert core.handle(Ready(1), 1.0) == [Route(1, 1, cold=True)]
    assert core.handle(Finished(1, 1), 1.2) == [Route(2, 1, cold=False)]
    assert core.handle(Ready(2), 2.0) == []
    env = core.envs[2]
    assert env.ready and env.in_flight == 0
    assert core.handle(Arrival(pool, 3), 2.1) == [Route(3, 2, cold=False)]


def test_at_most_max_starting_environments_start_at_once() -> None:
    core = ScalingCore(memory_budget_mb=65536, max_starting=2)
    pool = deployed(core, serverless(max_concurrency=20))
    assert core.handle(Arrival(pool, 1), 0.0) == [Start(1, pool, DEMAND)]
    assert core.handle(Arrival(pool, 2), 0.01) == [Start(2, pool, DEMAND)]
    # Two are starting: the next requests wait for the first free environment, none is throttled.
    for request in (3, 4, 5):
        assert core.handle(Arrival(pool, request), 0.02) == []
    state = core.pools[pool]
    assert state.stats.cold_starts == 2 and state.stats.throttled == 0
    # A start ends with requests still waiting and none starting for them: one more starts for
    # the oldest of them, so that two are starting again.
    assert core.handle(Ready(1), 0.03) == [Route(1, 1, cold=True), Start(3, pool, DEMAND)]
    # Environment 1 frees up first and takes the oldest waiter (request 2, hedged: its start goes on).
    assert core.handle(Finished(1, 1), 0.035) == [Route(2, 1, cold=False)]
    # Each start that ends takes the oldest waiter and, while more requests wait than starts are
    # coming for them, starts one for the next of them.
    assert core.handle(Ready(2), 0.04) == [Route(3, 2, cold=False), Start(4, pool, DEMAND)]
    # Request 4's start (now for nobody) still comes for the one request left: no new start.
    assert core.handle(Ready(3), 0.05) == [Route(4, 3, cold=False)]
    assert core.handle(Finished(1, 2), 0.06) == [Route(5, 1, cold=False)]
    assert state.waiters == {}
    assert state.stats.cold_starts == 4 and state.stats.throttled == 0
    # The last start finds nobody waiting: it joins the pool idle.
    assert core.handle(Ready(4), 0.08) == []
    assert core.handle(Arrival(pool, 6), 0.09) == [Route(6, 4, cold=False)]


def test_max_starting_holds_after_a_loss() -> None:
    core = ScalingCore(memory_budget_mb=65536, max_starting=1)
    pool = deployed(core, serverless(max_concurrency=20))
    serve_cold(core, pool, 1, 1, at=0.0)
    for request in range(2, 12):  # ten wait: one start of their own at a time
        core.handle(Arrival(pool, request), 1.0)
    state = core.pools[pool]
    assert len(state.envs) == 2
    # The busy environment is lost: its replacements are paced too, not ten starts at once.
    actions = core.handle(Lost(1), 1.1)
    starts = [a for a in actions if isinstance(a, Start)]
    assert len(starts) == 0  # one is still starting (for request 2): the limit is reached
    assert len(state.envs) - state.ready_count() == 1


def test_a_request_waiting_for_the_memory_of_a_retired_environment_gets_a_start() -> None:
    # The budget holds one environment: request 2 waits for environment 1, which then retires.
    core = ScalingCore(memory_budget_mb=1024)
    pool = deployed(core, serverless(max_concurrency=4))
    serve_cold(core, pool, 1, 1, at=0.0)
    assert core.handle(Arrival(pool, 2), 1.0) == []
    core.handle(Retire(1), 1.1)
    # Once it is stopped its memory is free, and the waiter gets a start of its own.
    actions = core.handle(Finished(1, 1), 1.2)
    assert Start(2, pool, DEMAND) in actions
    assert core.handle(Ready(2), 1.5) == [Route(2, 2, cold=True)]


def test_max_starting_still_throttles_at_max_concurrency() -> None:
    core = ScalingCore(memory_budget_mb=65536, max_starting=1)
    pool = deployed(core, serverless(variant="v1", max_concurrency=3))
    assert core.handle(Arrival(pool, 1), 0.0) == [Start(1, pool, DEMAND)]
    assert core.handle(Arrival(pool, 2), 0.0) == []
    assert core.handle(Arrival(pool, 3), 0.0) == []
    [reject] = core.handle(Arrival(pool, 4), 0.0)
    assert isinstance(reject, Reject) and reject.kind is RejectKind.THROTTLED


def test_max_starting_a_failed_start_leaves_the_waiters_to_the_other_starts() -> None:
    core = ScalingCore(memory_budget_mb=65536, max_starting=1)
    pool = deployed(core, serverless(max_concurrency=4))
    message = "The model failed to load on a cold start: bad weights"
    assert core.handle(Arrival(pool, 1), 0.0) == [Start(1, pool, DEMAND)]
    assert core.handle(Arrival(pool, 2), 0.0) == []
    # The only start fails: its request and the waiter are rejected (nothing else would serve it).
    assert core.handle(StartFailed(1, "bad weights"), 1.0) == [
        Reject(1, RejectKind.LOAD_FAILED, message),
        Reject(2, RejectKind.LOAD_FAILED, message),
    ]
    assert core.pools[pool].waiters == {} and core.used_mb == 0


# --- keep-alive -------------------------------------------------------------------------------


def test_fixed_keepalive_releases_oldest_first_at_the_exact_time() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless(idle_timeout_s=100.0))
    serve_cold(core, pool, 1, 1, at=0.0)
    serve_cold(core, pool, 2, 2, at=1.0)
    assert core.handle(Finished(1, 1), 10.0) == []
    assert core.handle(Finished(2, 2), 20.0) == []
    assert core.next_wakeup() == 110.0
    assert core.handle(Tick(), 109.9) == []
    assert core.handle(Tick(), 110.0) == [Stop(1, IDLE)]
    assert core.next_wakeup() == 120.0
    assert core.handle(Tick(), 120.0) == [Stop(2, IDLE)]
    assert core.next_wakeup() == math.inf
    assert core.pools[pool].stats.released == 2
    assert core.used_mb == 0
    assert core.envs == {}


def test_keepalive_never_releases_below_the_minimum() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = core.add_pool(serverless(min_environments=1, idle_timeout_s=100.0))
    assert core.handle(Deploy(pool, check=False), 0.0) == [Start(1, pool, MINIMUM)]
    assert core.handle(Ready(1), 1.0) == [Warmed(pool)]
    assert core.next_wakeup() == math.inf
    assert core.handle(Arrival(pool, 1), 2.0) == [Route(1, 1, cold=False)]
    serve_cold(core, pool, 2, 2, at=3.0)
    assert core.handle(Finished(1, 1), 10.0) == []
    assert core.handle(Finished(2, 2), 20.0) == []
    assert core.next_wakeup() == 110.0
    assert core.handle(Tick(), 110.0) == [Stop(1, IDLE)]  # the older one; 2 stays as the minimum
    assert core.next_wakeup() == math.inf
    assert core.handle(Tick(), 10_000.0) == []
    assert list(core.envs) == [2]


def test_reconfigure_lowering_the_minimum_tells_the_driver_when_to_release() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    config = serverless(min_environments=1, idle_timeout_s=100.0)
    pool = core.add_pool(config)
    assert core.handle(Deploy(pool, check=False), 0.0) == [Start(1, pool, MINIMUM)]
    assert core.handle(Ready(1), 1.0) == [Warmed(pool)]
    # A driver keeps its timer at its last full scan, lowered by each event's hint.
    wake = core.next_wakeup()
    assert wake == math.inf
    assert core.handle(Reconfigure(pool, serverless(min_environments=0, idle_timeout_s=100.0)), 5.0) == []
    wake = min(wake, core.take_wakeup_hint())
    assert wake <= 101.0  # the environment, idle since 1.0, is now surplus
    assert core.handle(Tick(), 101.0) == [Stop(1, IDLE)]


# --- minimums and deployment ------------------------------------------------------------------


def test_provisioned_concurrency_started_on_deploy_and_replaced_after_loss() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = core.add_pool(serverless(min_environments=2))
    assert core.handle(Deploy(pool, check=False), 0.0) == [Start(1, pool, MINIMUM), Start(2, pool, MINIMUM)]
    assert core.used_mb == 2048
    assert core.handle(Ready(1), 1.0) == []  # not Warmed until both are ready
    assert core.handle(Ready(2), 1.5) == [Warmed(pool)]
    assert core.handle(Lost(1), 5.0) == [Start(3, pool, MINIMUM)]
    assert core.handle(Ready(3), 6.0) == []  # Warmed only once, at deployment
    # A replacement that fails is retried after MINIMUM_RETRY_S.
    assert core.handle(Lost(3), 7.0) == [Start(4, pool, MINIMUM)]
    assert core.handle(StartFailed(4, "out of disk"), 8.0) == []
    assert core.next_wakeup() == 8.0 + MINIMUM_RETRY_S
    assert core.handle(Tick(), 8.0 + MINIMUM_RETRY_S) == [Start(5, pool, MINIMUM)]
    assert core.used_mb == 2048


def test_failed_minimum_start_fails_the_deployment() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = core.add_pool(serverless(min_environments=1))
    assert core.handle(Deploy(pool, check=False), 0.0) == [Start(1, pool, MINIMUM)]
    assert core.handle(StartFailed(1, "no such file"), 1.0) == [WarmFailed(pool, "no such file")]


def test_load_check_of_a_scale_to_zero_pool() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = core.add_pool(serverless())
    assert core.handle(Deploy(pool, check=True), 0.0) == [Start(1, pool, CHECK)]
    assert core.handle(Ready(1), 2.0) == [Warmed(pool)]
    # The check's environment stays as the first warm one.
    assert core.handle(Arrival(pool, 1), 3.0) == [Route(1, 1, cold=False)]


def test_failed_load_check() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = core.add_pool(serverless())
    assert core.handle(Deploy(pool, check=True), 0.0) == [Start(1, pool, CHECK)]
    assert core.handle(StartFailed(1, "ModuleNotFoundError: xgboost"), 2.0) == [
        WarmFailed(pool, "ModuleNotFoundError: xgboost")
    ]
    assert core.used_mb == 0


def test_load_check_too_big_for_the_budget() -> None:
    core = ScalingCore(memory_budget_mb=2048)
    pool = core.add_pool(serverless(memory_mb=4096))
    assert core.handle(Deploy(pool, check=True), 0.0) == [
        WarmFailed(
            pool,
            "no room to check that the model loads: MemorySizeInMB 4096 is larger than this machine's "
            "memory budget of 2048 MB (COLDBREW_MEMORY_BUDGET_MB).",
        )
    ]


# --- failed cold starts ------------------------------------------------------------------------


def test_failed_cold_start_rejects_its_request() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless())
    assert core.handle(Arrival(pool, 1), 0.0) == [Start(1, pool, DEMAND)]
    assert core.handle(StartFailed(1, "bad weights"), 1.0) == [
        Reject(1, RejectKind.LOAD_FAILED, "The model failed to load on a cold start: bad weights")
    ]
    assert core.used_mb == 0
    assert core.pools[pool].in_flight == 0


def test_failed_cold_start_gives_a_waiter_a_start_of_its_own() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless(max_concurrency=2))
    message = "The model failed to load on a cold start: bad weights"
    assert core.handle(Arrival(pool, 1), 0.0) == [Start(1, pool, DEMAND)]
    assert core.handle(Arrival(pool, 2), 0.0) == [Start(2, pool, DEMAND)]
    assert core.handle(Withdrawn(pool, 2), 0.1) == []
    assert core.handle(Arrival(pool, 3), 0.2) == []  # waits: both environments are starting
    # Environment 2 fails: MaxConcurrency has room again, so request 3 gets a start of its own
    # rather than waiting behind request 1's.
    assert core.handle(StartFailed(2, "bad weights"), 1.0) == [Start(3, pool, DEMAND)]
    assert core.handle(StartFailed(1, "bad weights"), 1.1) == [Reject(1, RejectKind.LOAD_FAILED, message)]
    assert core.handle(StartFailed(3, "bad weights"), 1.2) == [Reject(3, RejectKind.LOAD_FAILED, message)]
    assert core.pools[pool].waiters == {}
    assert core.used_mb == 0


def test_failed_cold_start_rejects_every_waiter_when_nothing_else_runs() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless(max_concurrency=1))
    message = "The model failed to load on a cold start: bad weights"
    assert core.handle(Arrival(pool, 1), 0.0) == [Start(1, pool, DEMAND)]
    assert core.handle(Withdrawn(pool, 1), 0.1) == []
    assert core.handle(Arrival(pool, 2), 0.2) == []  # waits: the one environment allowed is starting
    assert core.handle(StartFailed(1, "bad weights"), 1.0) == [Reject(2, RejectKind.LOAD_FAILED, message)]
    assert core.pools[pool].waiters == {}
    assert core.used_mb == 0


# --- memory budget ------------------------------------------------------------------------------


def test_cold_start_evicts_idle_environments_of_other_pools_least_recently_used_first() -> None:
    core = ScalingCore(memory_budget_mb=4096)
    a = deployed(core, serverless("a", memory_mb=1024))
    b = deployed(core, serverless("b", memory_mb=1024, min_environments=0))
    c = deployed(core, serverless("c", memory_mb=2048))
    serve_cold(core, a, 1, 1, at=0.0)
    serve_cold(core, a, 2, 2, at=1.0)
    serve_cold(core, b, 3, 3, at=2.0)
    serve_cold(core, a, 4, 4, at=3.0)
    assert core.used_mb == 4096
    assert core.handle(Finished(1, 1), 10.0) == []
    assert core.handle(Finished(3, 3), 15.0) == []
    assert core.handle(Finished(2, 2), 20.0) == []
    # Environment 4 of pool a is busy; 1 (a, idle since 10) and 3 (b, 15) are the oldest idle.
    assert core.handle(Arrival(c, 5), 30.0) == [Stop(1, EVICTED), Stop(3, EVICTED), Start(5, c, DEMAND)]
    assert core.evictions == 2
    assert core.pools[a].stats.evicted == 1
    assert core.pools[b].stats.evicted == 1
    assert core.used_mb == 4096
    assert sorted(core.envs) == [2, 4, 5]


def test_eviction_spares_the_minimum_of_other_pools() -> None:
    core = ScalingCore(memory_budget_mb=3072)
    b = core.add_pool(serverless("b", min_environments=1))
    assert core.handle(Deploy(b, check=False), 0.0) == [Start(1, b, MINIMUM)]
    assert core.handle(Ready(1), 1.0) == [Warmed(b)]
    assert core.handle(Arrival(b, 1), 2.0) == [Route(1, 1, cold=False)]
    serve_cold(core, b, 2, 2, at=2.0)
    assert core.handle(Finished(1, 1), 4.0) == []
    assert core.handle(Finished(2, 2), 5.0) == []
    a = deployed(core, serverless("a", memory_mb=2048))
    # b holds two idle environments, one of them its minimum: only the least recently used goes.
    assert core.handle(Arrival(a, 3), 6.0) == [Stop(1, EVICTED), Start(3, a, DEMAND)]
    assert core.handle(Ready(3), 7.0) == [Route(3, 3, cold=True)]
    # With a's one environment busy, only b's minimum is idle: no room for a second one, so a's
    # next request waits for its busy one rather than being throttled, and nothing is evicted.
    assert core.handle(Arrival(a, 4), 8.0) == []
    assert sorted(core.envs) == [2, 3]
    assert core.handle(Finished(3, 3), 9.0) == [Route(4, 3, cold=False)]
    assert core.pools[a].stats.throttled == 0
    assert core.evictions == 1
    assert core.pools[b].stats.evicted == 1


def test_a_preemptible_pool_yields_its_busy_environments_and_never_evicts() -> None:
    core = ScalingCore(memory_budget_mb=3072)
    job = deployed(core, transform_job(instances=2, memory_mb=1024))
    a = deployed(core, serverless("a", memory_mb=1024))
    b = deployed(core, serverless("b", memory_mb=2048))
    serve_cold(core, job, 1, 1, at=0.0)
    serve_cold(core, job, 2, 2, at=0.1)
    serve_cold(core, a, 3, 3, at=1.0)
    assert core.handle(Finished(3, 3), 2.0) == []
    # The job's two environments are busy, a's one is idle: b's cold start takes the job's memory.
    assert core.handle(Arrival(b, 4), 3.0) == [Stop(1, EVICTED), Stop(2, EVICTED), Start(4, b, DEMAND)]
    assert core.pools[job].in_flight == 0
    assert sorted(core.envs) == [3, 4]
    # The job's retry finds 0 MB free and a's idle environment: it is throttled, a keeps it.
    assert core.handle(Arrival(job, 5), 4.0) == [
        Reject(
            5,
            RejectKind.THROTTLED,
            "The machine's memory budget of 3072 MB is held by busy environments; retry with backoff, "
            "or raise COLDBREW_MEMORY_BUDGET_MB.",
        )
    ]
    assert sorted(core.envs) == [3, 4]
    # The finish of an invocation on an evicted environment is ignored.
    assert core.handle(Finished(1, 1), 5.0) == []


def test_a_transform_job_starts_all_its_instances_at_deploy_in_free_memory_only() -> None:
    core = ScalingCore(memory_budget_mb=4096)
    job = core.add_pool(dataclasses.replace(transform_job(instances=3, memory_mb=1024), start_with=3))
    assert core.handle(Deploy(job, check=True), 0.0) == [
        Start(1, job, CHECK),
        Start(2, job, PREWARM),
        Start(3, job, PREWARM),
    ]
    assert core.handle(Ready(2), 0.2) == []
    assert core.handle(Ready(3), 0.2) == []
    assert core.handle(Ready(1), 0.3) == [Warmed(job)]
    # Each takes an invocation at once: no cold start for the second and third.
    routes = [core.handle(Arrival(job, r), 0.4) for r in (1, 2, 3)]
    assert all(len(r) == 1 and isinstance(r[0], Route) and not r[0].cold for r in routes), routes
    assert sorted(r[0].env for r in routes) == [1, 2, 3]  # type: ignore[union-attr]
    # With room for two, the third is not started, and nothing is evicted for it.
    core = ScalingCore(memory_budget_mb=3072)
    a = deployed(core, serverless("a", memory_mb=1024))
    serve_cold(core, a, 1, 1, at=0.0)
    assert core.handle(Finished(1, 1), 1.0) == []
    job = core.add_pool(dataclasses.replace(transform_job(instances=3, memory_mb=1024), start_with=3))
    assert core.handle(Deploy(job, check=True), 2.0) == [Start(2, job, CHECK), Start(3, job, PREWARM)]
    assert sorted(core.envs) == [1, 2, 3]


def test_a_burst_that_fills_the_budget_waits_for_its_own_environments() -> None:
    # Room for two 1024 MB environments; MaxConcurrency 4.
    core = ScalingCore(memory_budget_mb=2048)
    pool = deployed(core, serverless(memory_mb=1024, max_concurrency=4))
    assert core.handle(Arrival(pool, 1), 0.0) == [Start(1, pool, DEMAND)]
    assert core.handle(Arrival(pool, 2), 0.0) == [Start(2, pool, DEMAND)]
    # The budget is full, but the pool's environments (still starting) will serve: 3 and 4 wait.
    assert core.handle(Arrival(pool, 3), 0.1) == []
    assert core.handle(Arrival(pool, 4), 0.1) == []
    # Past MaxConcurrency the throttle is SageMaker's, whatever the budget.
    (reject,) = core.handle(Arrival(pool, 5), 0.1)
    assert isinstance(reject, Reject) and "MaxConcurrency of 4" in reject.message
    assert core.handle(Ready(1), 0.5) == [Route(1, 1, cold=True)]
    assert core.handle(Ready(2), 0.5) == [Route(2, 2, cold=True)]
    # In arrival order, as each environment frees up; nothing more is started.
    assert core.handle(Finished(2, 2), 0.6) == [Route(3, 2, cold=False)]
    assert core.handle(Finished(1, 1), 0.7) == [Route(4, 1, cold=False)]
    assert sorted(core.envs) == [1, 2]
    assert core.pools[pool].stats.throttled == 1
    assert core.used_mb == 2048


def test_throttled_without_evicting_when_eviction_cannot_make_room() -> None:
    core = ScalingCore(memory_budget_mb=3072)
    a = deployed(core, serverless("a", memory_mb=1024))
    b = deployed(core, serverless("b", memory_mb=1024))
    c = deployed(core, serverless("c", memory_mb=2048))
    serve_cold(core, a, 1, 1, at=0.0)
    serve_cold(core, a, 2, 2, at=1.0)
    serve_cold(core, b, 3, 3, at=2.0)
    assert core.handle(Finished(3, 3), 3.0) == []
    # Only 1024 MB (b's idle environment) could be freed; c needs 2048: nothing is stopped.
    assert core.handle(Arrival(c, 4), 4.0) == [
        Reject(
            4,
            RejectKind.THROTTLED,
            "The machine's memory budget of 3072 MB is held by busy environments; retry with backoff, "
            "or raise COLDBREW_MEMORY_BUDGET_MB.",
        )
    ]
    assert core.evictions == 0
    assert sorted(core.envs) == [1, 2, 3]
    assert core.pools[c].stats.throttled == 1


def test_cold_start_larger_than_the_budget_is_throttled() -> None:
    core = ScalingCore(memory_budget_mb=3072)
    pool = deployed(core, serverless(memory_mb=4096))
    assert core.handle(Arrival(pool, 1), 0.0) == [
        Reject(
            1,
            RejectKind.THROTTLED,
            "MemorySizeInMB 4096 is larger than this machine's memory budget of 3072 MB "
            "(COLDBREW_MEMORY_BUDGET_MB).",
        )
    ]


def test_load_check_waits_for_an_environment_of_another_pool_to_become_idle() -> None:
    core = ScalingCore(memory_budget_mb=2048)
    a = deployed(core, serverless("a"))
    serve_cold(core, a, 1, 1, at=0.0)
    serve_cold(core, a, 2, 2, at=1.0)
    b = core.add_pool(serverless("b"))
    assert core.handle(Deploy(b, check=True), 2.0) == []  # no room, nothing idle to evict
    assert core.next_wakeup() == math.inf
    assert core.handle(Finished(1, 1), 3.0) == [Stop(1, EVICTED), Start(3, b, CHECK)]
    assert core.evictions == 1
    assert core.handle(Ready(3), 4.0) == [Warmed(b)]


def test_load_check_waits_for_an_environment_of_another_pool_to_stop() -> None:
    core = ScalingCore(memory_budget_mb=2048)
    a = deployed(core, serverless("a"))
    serve_cold(core, a, 1, 1, at=0.0)
    serve_cold(core, a, 2, 2, at=1.0)
    b = core.add_pool(serverless("b"))
    assert core.handle(Deploy(b, check=True), 2.0) == []
    assert core.handle(Lost(2), 3.0) == [Start(3, b, CHECK)]
    assert core.evictions == 0
    assert core.handle(StartFailed(3, "bad weights"), 4.0) == [WarmFailed(b, "bad weights")]


# --- adaptive keep-alive: the pre-warm path -------------------------------------------------------


def adaptive_pool_every_600_s(core: ScalingCore, periods: int) -> tuple[int, Loop]:
    """A pool with the adaptive policy (300 s fallback timeout), with ``periods`` invocations of
    1 s queued every 600 s on a loop whose starts take 2 s."""
    pool = core.add_pool(serverless(max_concurrency=4, idle_timeout_s=300.0, keepalive="adaptive"))
    loop = Loop(core)
    loop.send(Deploy(pool, check=False), 0.0)
    for k in range(periods):
        loop.arrive(600.0 * k, pool, 1.0)
    return pool, loop


def test_adaptive_policy_releases_at_idle_and_prewarms_before_the_next_arrival() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool, loop = adaptive_pool_every_600_s(core, periods=10)
    loop.run()
    state = core.pools[pool]
    # Each one a cold start (the fallback timeout released the last), idle 597 s before the next.
    assert state.stats.cold_served == 10
    assert state.stats.prewarms == 0
    assert core.envs == {}
    t = 6000.0
    env = state.stats.environment_starts + 1
    # The 11th arrival records the 10th idle time: the histogram is trusted from here on.
    assert core.handle(Arrival(pool, 101), t) == [Start(env, pool, DEMAND)]
    assert core.handle(Arrival(pool, 102), t) == [Start(env + 1, pool, DEMAND)]
    assert core.handle(Ready(env), t + 2) == [Route(101, env, cold=True)]
    assert core.handle(Ready(env + 1), t + 2) == [Route(102, env + 1, cold=True)]
    assert core.handle(Finished(env, 101), t + 3) == []
    # Going idle with a pre-warm window: every environment beyond the minimum goes at once.
    assert core.handle(Finished(env + 1, 102), t + 3) == [Stop(env, IDLE), Stop(env + 1, IDLE)]
    windows = state.policy.windows(t + 3)
    assert windows.prewarm_s == pytest.approx(531.0)  # bin [590, 600) s, less 10 %
    assert windows.keepalive_s == pytest.approx(129.0)  # to 600 s plus 10 %
    prewarm_at = core.next_wakeup()
    assert prewarm_at == pytest.approx(t + 3 + 531.0)
    assert core.handle(Tick(), prewarm_at - 0.5) == []
    assert core.handle(Tick(), prewarm_at) == [Start(env + 2, pool, PREWARM)]
    assert state.stats.prewarms == 1
    window_end = core.next_wakeup()
    assert window_end == pytest.approx(prewarm_at + 129.0)
    assert core.handle(Ready(env + 2), prewarm_at + 2) == []
    assert core.handle(Tick(), window_end - 0.5) == []
    assert core.handle(Tick(), window_end) == [Stop(env + 2, IDLE)]
    assert core.used_mb == 0
    assert core.next_wakeup() == math.inf


def test_adaptive_prewarm_serves_the_next_arrival_warm() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool, loop = adaptive_pool_every_600_s(core, periods=11)
    # Idle at 6003 after the 11th; pre-warmed at 6534, ready at 6536: 6600 is served warm.
    last = loop.arrive(6600.0, pool, 1.0)
    loop.run(until=6600.0)
    (route,) = loop.outcomes[last]
    assert isinstance(route, Route) and not route.cold
    assert core.envs[route.env].purpose is PREWARM
    loop.run()
    state = core.pools[pool]
    assert state.stats.cold_served == 11
    assert state.stats.prewarms == 2  # after the 11th and after the 12th
    assert core.envs == {}


def test_arrival_that_shortens_the_adaptive_keepalive_tells_the_driver() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = core.add_pool(serverless(max_concurrency=4, idle_timeout_s=300.0, keepalive="adaptive"))
    loop = Loop(core)
    loop.send(Deploy(pool, check=False), 0.0)
    for k in range(10):  # two at a time every 200 s: both environments kept by the 300 s fallback
        loop.arrive(200.0 * k, pool, 1.0)
        loop.arrive(200.0 * k, pool, 1.0)
    loop.run(until=1999.0)
    assert len(core.envs) == 2
    # One invocation at 2000 s records the 10th idle time (199 s): the histogram now keeps an
    # environment from 171 s to 220 s after going idle, so the other one, idle since 1801 s, is due.
    loop.arrive(2000.0, pool, 1.0)
    loop.run(until=2000.0)
    (stop,) = [a for t, a in loop.actions if isinstance(a, Stop)]
    assert loop.actions[-1] == (2000.0, stop)
    assert stop.reason is IDLE
    loop.run()
    loop.check_all_answered()


# --- withdrawal, close, forget ------------------------------------------------------------------


def test_withdrawn_request_leaves_its_environment_to_join_idle() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless())
    assert core.handle(Arrival(pool, 1), 0.0) == [Start(1, pool, DEMAND)]
    assert core.handle(Withdrawn(pool, 1), 0.5) == []
    assert core.handle(Withdrawn(pool, 99), 0.6) == []  # unknown: ignored
    assert core.handle(Ready(1), 2.0) == []
    assert core.envs[1].in_flight == 0
    assert core.pools[pool].in_flight == 0
    assert core.handle(Arrival(pool, 2), 3.0) == [Route(2, 1, cold=False)]


def test_close_rejects_waiters_stops_busy_when_finished_then_drains() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless())
    serve_cold(core, pool, 1, 1, at=0.0)
    assert core.handle(Arrival(pool, 2), 1.0) == [Start(2, pool, DEMAND)]
    message = "Variant a is being replaced; retry the request."
    assert core.handle(Close(pool), 2.0) == [Reject(2, RejectKind.CLOSED, message)]
    assert core.handle(Arrival(pool, 3), 2.5) == [Reject(3, RejectKind.CLOSED, message)]
    assert core.handle(Tick(), 2.6) == []  # a closed pool keeps no minimum and releases nothing
    assert core.handle(Finished(1, 1), 3.0) == [Stop(1, CLOSED)]
    assert pool in core.pools  # environment 2 is still starting
    assert core.handle(Ready(2), 4.0) == [Stop(2, CLOSED), Drained(pool)]
    assert pool not in core.pools
    assert core.used_mb == 0
    assert core.handle(Arrival(pool, 4), 5.0) == [
        Reject(4, RejectKind.CLOSED, "The variant is being replaced; retry the request.")
    ]


def test_close_stops_idle_environments_at_once() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless())
    serve_cold(core, pool, 1, 1, at=0.0)
    serve_cold(core, pool, 2, 2, at=1.0)
    assert core.handle(Finished(1, 1), 2.0) == []
    assert core.handle(Close(pool), 3.0) == [Stop(1, CLOSED)]
    assert core.handle(Finished(2, 2), 4.0) == [Stop(2, CLOSED), Drained(pool)]


def test_forget_stops_everything_now() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless())
    serve_cold(core, pool, 1, 1, at=0.0)
    assert core.handle(Arrival(pool, 2), 2.0) == [Start(2, pool, DEMAND)]
    assert core.handle(Forget(pool), 3.0) == [
        Reject(2, RejectKind.CLOSED, "Variant a is being replaced; retry the request."),
        Stop(1, CLOSED),
        Stop(2, CLOSED),
        Drained(pool),
    ]
    assert core.used_mb == 0
    # Late news about the forgotten environments changes nothing.
    assert core.handle(Finished(1, 1), 4.0) == []
    assert core.handle(Ready(2), 4.0) == []


# --- provisioned instances ----------------------------------------------------------------------


def test_provisioned_instances_queue_beyond_capacity_on_the_least_loaded() -> None:
    core = ScalingCore(memory_budget_mb=32768)
    pool = core.add_pool(provisioned(instances=2, per_instance=2))
    assert core.handle(Deploy(pool, check=False), 0.0) == [Start(1, pool, MINIMUM), Start(2, pool, MINIMUM)]
    assert core.used_mb == 32768  # instances count in the budget, by their instance type's memory
    assert core.handle(Arrival(pool, 1), 0.5) == []  # waits for an instance
    assert core.handle(Ready(1), 1.0) == [Route(1, 1, cold=False)]
    assert core.handle(Ready(2), 2.0) == [Warmed(pool)]
    # With room: most recently used first (2 was ready last, then 1 while 2 is full).
    routes = [core.handle(Arrival(pool, r), 3.0) for r in range(2, 5)]
    assert routes == [[Route(2, 2, cold=False)], [Route(3, 2, cold=False)], [Route(4, 1, cold=False)]]
    # Beyond capacity: queued on the least loaded instance, never throttled.
    for request in range(5, 105):
        (route,) = core.handle(Arrival(pool, request), 4.0)
        assert isinstance(route, Route)
    state = core.pools[pool]
    assert sorted(e.in_flight for e in state.envs.values()) == [52, 52]
    assert state.stats.throttled == 0
    assert state.stats.cold_starts == 0
    assert core.handle(Tick(), 1e9) == []


def test_requests_that_waited_for_starting_instances_are_not_overtaken() -> None:
    core = ScalingCore(memory_budget_mb=32768)
    pool = core.add_pool(provisioned(instances=2, per_instance=2))
    core.handle(Deploy(pool, check=False), 0.0)
    for request in range(1, 6):  # five wait while both instances start
        assert core.handle(Arrival(pool, request), 0.5) == []
    # The first instance ready takes all five (instances queue beyond their concurrency), in order.
    assert core.handle(Ready(1), 1.0) == [Route(r, 1, cold=False) for r in range(1, 6)]
    assert not core.pools[pool].waiters
    # A later arrival goes to the other instance once it is ready, the least loaded.
    core.handle(Ready(2), 1.5)
    assert core.handle(Arrival(pool, 6), 2.0) == [Route(6, 2, cold=False)]


def test_fewer_instances_stop_idle_ones_now_and_busy_ones_when_they_finish() -> None:
    core = ScalingCore(memory_budget_mb=3 * 16384)
    pool = core.add_pool(provisioned(instances=3, per_instance=2))
    core.handle(Deploy(pool, check=False), 0.0)
    for env, at in ((1, 1.0), (2, 1.1), (3, 1.2)):
        core.handle(Ready(env), at)
    assert core.handle(Arrival(pool, 1), 2.0) == [Route(1, 3, cold=False)]  # most recently ready
    assert core.handle(Arrival(pool, 2), 2.0) == [Route(2, 3, cold=False)]
    assert core.handle(Arrival(pool, 3), 2.0) == [Route(3, 2, cold=False)]
    # UpdateEndpointWeightsAndCapacities: DesiredInstanceCount 3 -> 1. Instance 1 is idle and goes
    # now; 2 and 3 are busy: the first of them to finish goes, the other stays.
    assert core.handle(Reconfigure(pool, provisioned(instances=1, per_instance=2)), 3.0) == [Stop(1, IDLE)]
    assert core.handle(Finished(2, 3), 4.0) == [Stop(2, IDLE)]
    assert core.handle(Finished(3, 1), 4.5) == []
    assert list(core.pools[pool].envs) == [3]
    assert core.handle(Arrival(pool, 4), 5.0) == [Route(4, 3, cold=False)]


def test_lost_instance_is_replaced() -> None:
    core = ScalingCore(memory_budget_mb=16384)
    pool = core.add_pool(provisioned(instances=1, per_instance=4))
    assert core.handle(Deploy(pool, check=False), 0.0) == [Start(1, pool, MINIMUM)]
    assert core.handle(Ready(1), 1.0) == [Warmed(pool)]
    assert core.handle(Arrival(pool, 1), 2.0) == [Route(1, 1, cold=False)]
    assert core.handle(Lost(1), 3.0) == [Start(2, pool, MINIMUM)]
    assert core.pools[pool].in_flight == 0
    assert core.handle(Arrival(pool, 2), 3.5) == []
    assert core.handle(Ready(2), 4.0) == [Route(2, 2, cold=False)]


# --- provisioned instances inside the memory budget --------------------------------------------


def test_instances_that_cannot_fit_fail_the_deployment_before_starting_or_evicting_anything() -> None:
    core = ScalingCore(memory_budget_mb=20000)
    other = deployed(core, serverless("other", memory_mb=4096))
    serve_cold(core, other, 1, 1, at=0.0)
    assert core.handle(Finished(1, 1), 1.0) == []  # idle: evictable
    pool = core.add_pool(provisioned(instances=2, per_instance=2, memory_mb=16384))
    (failed,) = core.handle(Deploy(pool, check=False), 2.0)
    assert failed == WarmFailed(
        pool,
        "its 2 instances of 16384 MB each (the memory of its instance type) need 32768 MB, but this "
        "machine's memory budget of 20000 MB (COLDBREW_MEMORY_BUDGET_MB) has room for 20000 MB. To "
        "deploy it, lower the instance count, choose a smaller instance type, delete other endpoints, "
        "or raise COLDBREW_MEMORY_BUDGET_MB.",
    )
    assert core.used_mb == 4096 and list(core.envs) == [1]  # nothing started, nothing evicted


def test_instances_that_fit_once_idle_environments_go_evict_them() -> None:
    core = ScalingCore(memory_budget_mb=20000)
    other = deployed(core, serverless("other", memory_mb=4096))
    serve_cold(core, other, 1, 1, at=0.0)
    assert core.handle(Finished(1, 1), 1.0) == []
    pool = core.add_pool(provisioned(instances=1, per_instance=2, memory_mb=16384))
    assert core.handle(Deploy(pool, check=False), 2.0) == [Stop(1, EVICTED), Start(2, pool, MINIMUM)]
    assert core.used_mb == 16384


def test_instances_held_by_busy_environments_name_what_holds_the_budget() -> None:
    core = ScalingCore(memory_budget_mb=20000)
    other = deployed(core, serverless("other", memory_mb=8192))
    serve_cold(core, other, 1, 1, at=0.0)  # busy: not evictable
    pool = core.add_pool(provisioned(instances=1, per_instance=2, memory_mb=16384))
    (failed,) = core.handle(Deploy(pool, check=False), 2.0)
    assert isinstance(failed, WarmFailed)
    assert failed.reason.startswith(
        "its 1 instance of 16384 MB (the memory of its instance type) needs 16384 MB, but this machine's "
        "memory budget of 20000 MB"
    )
    assert "has room for 11808 MB; the rest is held by other environments" in failed.reason


def test_more_instances_than_fit_are_refused_and_nothing_changes() -> None:
    core = ScalingCore(memory_budget_mb=40000)
    pool = core.add_pool(provisioned(instances=1, per_instance=2, memory_mb=16384))
    core.handle(Deploy(pool, check=False), 0.0)
    assert core.handle(Ready(1), 1.0) == [Warmed(pool)]
    (refused,) = core.handle(Reconfigure(pool, provisioned(instances=3, per_instance=2)), 2.0)
    assert isinstance(refused, Refused) and refused.pool == pool
    assert "need 32768 MB more, but this machine's memory budget of 40000 MB" in refused.reason
    assert core.pools[pool].config == provisioned(instances=1, per_instance=2)
    assert core.handle(Tick(), 100.0) == []  # no start retried in the background either
    # One more fits.
    assert core.handle(Reconfigure(pool, provisioned(instances=2, per_instance=2)), 3.0) == [
        Start(2, pool, MINIMUM)
    ]
    assert core.used_mb == 32768


def test_provisioned_concurrency_raised_past_the_budget_is_refused() -> None:
    core = ScalingCore(memory_budget_mb=3072)
    pool = core.add_pool(serverless(memory_mb=1024, min_environments=1))
    core.handle(Deploy(pool, check=False), 0.0)
    assert core.handle(Ready(1), 1.0) == [Warmed(pool)]
    (refused,) = core.handle(Reconfigure(pool, serverless(memory_mb=1024, min_environments=4)), 2.0)
    assert isinstance(refused, Refused)
    assert refused.reason.startswith(
        "its ProvisionedConcurrency of 4 environments of 1024 MB (MemorySizeInMB) need 3072 MB more"
    )
    assert core.handle(Reconfigure(pool, serverless(memory_mb=1024, min_environments=3)), 3.0) == [
        Start(2, pool, MINIMUM),
        Start(3, pool, MINIMUM),
    ]


def test_every_environment_counts_and_the_budget_is_back_to_zero_after_close() -> None:
    core = ScalingCore(memory_budget_mb=65536)
    instances = core.add_pool(provisioned(instances=2, per_instance=2, memory_mb=8192))
    core.handle(Deploy(instances, check=False), 0.0)
    serverless_pool = deployed(core, serverless(memory_mb=2048))
    serve_cold(core, serverless_pool, 1, 3, at=0.0)
    assert core.used_mb == 2 * 8192 + 2048
    core.handle(Close(instances), 1.0)
    core.handle(Close(serverless_pool), 1.0)
    core.handle(Ready(1), 1.5)
    core.handle(Ready(2), 1.5)
    assert core.handle(Finished(3, 1), 2.0) == [Stop(3, CLOSED), Drained(serverless_pool)]
    assert core.used_mb == 0 and core.pools == {}


# --- retirement (the workers of a zygote that died) --------------------------------------------


def test_retired_idle_environment_is_stopped_at_once_and_its_minimum_replaced() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = core.add_pool(serverless(min_environments=1))
    core.handle(Deploy(pool, check=False), 0.0)
    assert core.handle(Ready(1), 1.0) == [Warmed(pool)]
    assert core.handle(Retire(1), 2.0) == [Stop(1, RETIRED), Start(2, pool, MINIMUM)]
    assert core.used_mb == 1024
    assert core.handle(Retire(1), 2.5) == []  # told twice, or too late: nothing


def test_retired_busy_environment_gets_nothing_new_and_stops_once_its_invocation_finishes() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless(max_concurrency=2))
    serve_cold(core, pool, 1, 1, at=0.0)
    assert core.handle(Retire(1), 1.0) == []
    state = core.pools[pool]
    assert list(state.envs) == [] and list(state.retiring) == [1]
    # Its invocation still counts against MaxConcurrency, and its memory in the budget.
    assert core.handle(Arrival(pool, 2), 1.5) == [Start(2, pool, DEMAND)]
    assert core.handle(Arrival(pool, 3), 1.6) == [
        Reject(3, RejectKind.THROTTLED, "Endpoint ep variant a is at its MaxConcurrency of 2; "
               "retry with backoff or raise MaxConcurrency.")
    ]  # fmt: skip
    assert core.used_mb == 2048
    assert core.handle(Finished(1, 1), 2.0) == [Stop(1, RETIRED)]
    assert core.handle(Ready(2), 2.5) == [Route(2, 2, cold=True)]
    assert core.used_mb == 1024


def test_retired_instance_finishes_its_queue_while_a_replacement_takes_new_requests() -> None:
    core = ScalingCore(memory_budget_mb=32768)
    pool = core.add_pool(provisioned(instances=1, per_instance=2, memory_mb=8192))
    core.handle(Deploy(pool, check=False), 0.0)
    assert core.handle(Ready(1), 1.0) == [Warmed(pool)]
    for request in (1, 2, 3):
        assert core.handle(Arrival(pool, request), 2.0) == [Route(request, 1, cold=False)]
    assert core.handle(Retire(1), 3.0) == [Start(2, pool, MINIMUM)]
    assert core.handle(Arrival(pool, 4), 3.1) == []  # waits for the replacement, not the retiring one
    assert core.handle(Finished(1, 1), 3.5) == []
    assert core.handle(Ready(2), 4.0) == [Route(4, 2, cold=False)]
    assert core.handle(Finished(1, 2), 4.5) == []
    assert core.handle(Finished(1, 3), 5.0) == [Stop(1, RETIRED)]
    assert core.pools[pool].in_flight == 1


def test_closing_a_pool_waits_for_its_retiring_environments() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless())
    serve_cold(core, pool, 1, 1, at=0.0)
    core.handle(Retire(1), 1.0)
    assert core.handle(Close(pool), 2.0) == []
    assert core.handle(Finished(1, 1), 3.0) == [Stop(1, RETIRED), Drained(pool)]
    assert core.used_mb == 0


def test_forget_stops_retiring_environments_too() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless())
    serve_cold(core, pool, 1, 1, at=0.0)
    core.handle(Retire(1), 1.0)
    assert core.handle(Forget(pool), 2.0) == [Stop(1, CLOSED), Drained(pool)]
    assert core.used_mb == 0


def test_a_retiring_environment_that_dies_is_forgotten() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    pool = deployed(core, serverless())
    serve_cold(core, pool, 1, 1, at=0.0)
    core.handle(Retire(1), 1.0)
    assert core.handle(Lost(1), 2.0) == []
    assert core.pools[pool].in_flight == 0 and core.used_mb == 0
    assert core.handle(Finished(1, 1), 3.0) == []


# --- traces -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Crash:
    """Test-loop marker: some ready environment (picked by the seeded ``rng``) dies now."""


@dataclasses.dataclass(frozen=True)
class Orphaned:
    """Test-loop marker: some ready environment (picked by the seeded ``rng``) is retiring now, as
    the workers of a zygote that died are."""


class Loop:
    """Carries a core's actions out in virtual time, deciding nothing.

    A Start becomes Ready (or StartFailed, if ``fails`` says so) ``start_s`` later; a Route becomes
    Finished after its request's duration; a request still unserved ``patience_s`` after it
    arrived is Withdrawn. Ticks are sent when the wake time comes, kept as the live pools and the
    simulator keep it: lowered by each event's hint, set from a full scan after each tick. After
    every event the core's invariants are checked, and so is that wake time against a full scan.
    """

    def __init__(
        self,
        core: ScalingCore,
        *,
        start_s: Callable[[], float] = lambda: 2.0,
        fails: Callable[[Start, float], bool] = lambda start, at: False,
        patience_s: float = math.inf,
        rng: random.Random | None = None,
        check_wake: bool = True,
        cores: Callable[[int], float | None] = lambda pool: None,
    ) -> None:
        self.core = core
        self.cores = cores
        """The cores an invocation of a pool reports when it finishes (``Finished.cores``)."""
        self.start_s = start_s
        self.fails = fails
        self.patience_s = patience_s
        self.rng = rng or random.Random(0)
        self.check_wake = check_wake
        self.now = 0.0
        self.wake = math.inf
        self.queue: list[tuple[float, int, Event | Crash | Orphaned]] = []
        self.seq = itertools.count()
        self.requests = itertools.count(1)
        self.durations: dict[int, float] = {}
        self.outcomes: dict[int, list[Route | Reject]] = defaultdict(list)
        self.withdrawn: set[int] = set()
        self.actions: list[tuple[float, Action]] = []
        self.events = 0

    def push(self, at: float, event: Event | Crash | Orphaned) -> None:
        heapq.heappush(self.queue, (at, next(self.seq), event))

    def arrive(self, at: float, pool: int, duration_s: float) -> int:
        request = next(self.requests)
        self.durations[request] = duration_s
        self.push(at, Arrival(pool, request))
        if self.patience_s < math.inf:
            self.push(at + self.patience_s, Withdrawn(pool, request))
        return request

    def run(self, until: float = math.inf, max_events: int = 200_000) -> None:
        while self.events < max_events:
            next_at = self.queue[0][0] if self.queue else math.inf
            if self.wake <= until and self.wake <= next_at and self.wake < math.inf:
                at = max(self.wake, self.now)
                self.send(Tick(), at)
                self.wake = self.core.next_wakeup()
                assert self.wake > at, f"a tick at {at} left a wakeup at {self.wake}"
                continue
            if next_at > until or next_at == math.inf:
                return
            at, _, event = heapq.heappop(self.queue)
            if isinstance(event, Crash):
                ready = sorted(e.id for e in self.core.envs.values() if e.ready)
                if not ready:
                    continue
                event = Lost(self.rng.choice(ready))
            elif isinstance(event, Orphaned):
                ready = sorted(e.id for e in self.core.envs.values() if e.ready and not e.retiring)
                if not ready:
                    continue
                event = Retire(self.rng.choice(ready))
            elif isinstance(event, Withdrawn):
                if self.outcomes[event.request]:
                    continue  # served or rejected already: nothing to give up
                self.withdrawn.add(event.request)
            self.send(event, at)
        raise AssertionError(f"no quiescence after {max_events} events")

    def send(self, event: Event, at: float) -> list[Action]:
        assert at >= self.now
        self.now = at
        self.events += 1
        actions = self.core.handle(event, at)
        for action in actions:
            self.actions.append((at, action))
            if isinstance(action, Start):
                failed = self.fails(action, at)
                done: Event = StartFailed(action.env, "boom") if failed else Ready(action.env)
                self.push(at + self.start_s(), done)
            elif isinstance(action, Route):
                assert action.request not in self.withdrawn
                self.outcomes[action.request].append(action)
                assert len(self.outcomes[action.request]) == 1, f"request {action.request} answered twice"
                env = self.core.envs[action.env]
                assert env.ready
                self.push(
                    at + self.durations[action.request],
                    Finished(action.env, action.request, self.cores(env.pool)),
                )
            elif isinstance(action, Reject):
                assert action.request not in self.withdrawn
                self.outcomes[action.request].append(action)
                assert len(self.outcomes[action.request]) == 1, f"request {action.request} answered twice"
        self.wake = min(self.wake, self.core.take_wakeup_hint())
        check_invariants(self.core)
        if self.check_wake and not isinstance(event, Tick):
            # A full scan may be asked for at any time (it only forgets the hint, taken above).
            scan = self.core.next_wakeup()
            assert self.wake <= scan, f"after {event} at {at}: timer at {self.wake}, but due at {scan}"
        return actions

    def check_all_answered(self) -> None:
        for request in self.durations:
            if request in self.withdrawn:
                assert self.outcomes[request] == []
            else:
                assert len(self.outcomes[request]) == 1, f"request {request}: {self.outcomes[request]}"


def check_invariants(core: ScalingCore) -> None:
    assert core.used_mb == sum(e.memory_mb for e in core.envs.values())
    assert core.used_mb <= core.memory_budget_mb
    in_pools = 0
    for pool in core.pools.values():
        config = pool.config
        in_pools += len(pool.envs) + len(pool.retiring)
        assert all(core.envs[e] is env and env.pool == pool.id for e, env in pool.envs.items())
        assert all(core.envs[e] is env and env.retiring and env.in_flight for e, env in pool.retiring.items())
        assert not any(e.retiring for e in pool.envs.values())
        everything = [*pool.envs.values(), *pool.retiring.values()]
        assert pool.in_flight == sum(e.in_flight for e in everything)
        assert len(pool.envs) <= config.max_environments
        if config.serverless:
            assert all(e.in_flight <= config.environment_concurrency for e in pool.envs.values())
            assert pool.in_flight + len(pool.waiters) <= config.max_concurrency
            if core.max_starting is not None:
                demand = [e for e in pool.envs.values() if not e.ready and e.purpose is DEMAND]
                assert len(demand) <= core.max_starting
        assert set(pool.dedicated) <= set(pool.waiters)
        if pool.waiters and pool.free:
            # A request waits beside a free environment only for a core.
            limit = core.cpu_limit(pool)
            assert limit is not None and pool.in_flight >= limit
        assert all(e.ready for e in pool.envs.values() if e.in_flight)
        check_free_list(pool)
    assert in_pools == len(core.envs)


def check_free_list(pool: PoolState) -> None:
    """With one invocation per environment, the idle ones are kept least recently used first."""
    if pool.config.environment_concurrency != 1 or pool.closed:
        return
    idle = [e for e in pool.envs.values() if e.ready and e.in_flight == 0]
    assert sorted(map(id, pool.free)) == sorted(map(id, idle))
    assert [e.last_used for e in pool.free] == sorted(e.last_used for e in pool.free)


def settle_check(core: ScalingCore, loop: Loop) -> None:
    """After a trace and every keep-alive: each pool holds its minimum (unless its deployment
    failed, which a live driver would drain), all idle."""
    failed = {action.pool for _, action in loop.actions if isinstance(action, WarmFailed)}
    for pool in core.pools.values():
        assert pool.waiters == {} and pool.in_flight == 0
        if pool.id in failed:
            assert len(pool.envs) <= pool.config.min_environments
        else:
            assert len(pool.envs) == pool.config.min_environments, pool.config.variant
        assert all(e.ready for e in pool.envs.values())


def test_periodic_trace() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    loop = Loop(core)
    a = core.add_pool(serverless("a", memory_mb=1024, max_concurrency=2, idle_timeout_s=300.0))
    b = core.add_pool(serverless("b", memory_mb=2048, max_concurrency=3, keepalive="adaptive"))
    c = core.add_pool(serverless("c", memory_mb=512, max_concurrency=4, min_environments=1))
    for pool in (a, b, c):
        loop.send(Deploy(pool, check=False), 0.0)
    n = 30
    for k in range(n):
        loop.arrive(1.0 + 200.0 * k, a, 0.5)  # within the idle timeout: warm after the first
        loop.arrive(600.0 * k, b, 1.0)  # past it: cold until the adaptive policy learns
        for j in range(3):
            loop.arrive(7.0 + 100.0 * k + j * 0.1, c, 5.0)  # 3 at once: the minimum plus 2 cold
    for k in range(n, 3 * n):
        loop.arrive(1.0 + 200.0 * k, a, 0.5)
    loop.run()
    loop.check_all_answered()
    settle_check(core, loop)
    stats = {pool: core.pools[pool].stats for pool in (a, b, c)}
    assert stats[a].cold_starts == 1
    assert stats[b].cold_served == 11  # 10 idle times to learn from, then the 11th recorded
    assert stats[b].prewarms == n - 10  # after the 11th and each later one: pre-warmed, served warm
    assert stats[b].environment_starts == 11 + n - 10
    assert all(s.throttled == 0 for s in stats.values())
    assert core.evictions == 0


def test_bursty_trace_under_memory_pressure() -> None:
    rng = random.Random(7)
    core = ScalingCore(memory_budget_mb=4096)
    loop = Loop(core, start_s=lambda: rng.uniform(0.5, 3.0))
    a = core.add_pool(serverless("a", memory_mb=1024, max_concurrency=4, idle_timeout_s=120.0))
    b = core.add_pool(serverless("b", memory_mb=2048, max_concurrency=2, idle_timeout_s=120.0))
    for pool in (a, b):
        loop.send(Deploy(pool, check=False), 0.0)
    t = 0.0
    for burst in range(40):
        t += rng.uniform(20.0, 200.0)
        pool = a if burst % 3 else b
        for _ in range(rng.randint(1, 15)):
            loop.arrive(t + rng.uniform(0.0, 0.5), pool, rng.uniform(0.05, 2.0))
    loop.run()
    loop.check_all_answered()
    settle_check(core, loop)
    stats = [core.pools[p].stats for p in (a, b)]
    assert sum(s.throttled for s in stats) > 0
    assert sum(s.hedged for s in stats) > 0
    assert core.evictions > 0


@pytest.mark.parametrize("cpu_slots", [None, 3])
@pytest.mark.parametrize("max_starting", [None, 1, 2])
@pytest.mark.parametrize("seed", range(12))
def test_random_trace(seed: int, max_starting: int | None, cpu_slots: int | None) -> None:
    rng = random.Random(seed)
    core = ScalingCore(
        memory_budget_mb=rng.choice([2048, 4096, 6144]), max_starting=max_starting, cpu_slots=cpu_slots
    )
    # Per pool, the cores its invocations use (I/O-bound to multi-threaded), each one a little off.
    pool_cores = {pool: rng.choice([None, 0.02, 0.5, 1.0, 2.0]) for pool in range(1, 5)}

    def cores(pool: int) -> float | None:
        typical = pool_cores.get(pool)
        return None if typical is None else typical * rng.uniform(0.7, 1.3)

    loop = Loop(
        core,
        start_s=lambda: rng.expovariate(1 / 2.0),
        fails=lambda start, at: at > 0 and rng.random() < 0.05,
        patience_s=rng.choice([math.inf, 5.0, 30.0]),
        rng=rng,
        cores=cores,
    )
    pools = []
    for name in "abc":
        max_concurrency = rng.randint(1, 5)
        config = serverless(
            name,
            memory_mb=rng.choice([512, 1024, 2048]),
            max_concurrency=max_concurrency,
            min_environments=rng.choice([0, 0, 1]),
            idle_timeout_s=rng.choice([10.0, 60.0, 300.0]),
            keepalive=rng.choice(["fixed", "adaptive"]),
        )
        pools.append(core.add_pool(config))
    instances = provisioned(
        instances=rng.randint(1, 3), per_instance=rng.randint(2, 4), memory_mb=rng.choice([256, 512])
    )
    pools.append(core.add_pool(instances))
    for pool in pools:
        loop.send(Deploy(pool, check=rng.random() < 0.5), 0.0)
    horizon = 3600.0
    for pool in pools:
        rate = rng.choice([1 / 5, 1 / 30, 1 / 120])
        t = rng.uniform(0.0, 10.0)
        while t < horizon:
            loop.arrive(t, pool, rng.expovariate(1 / rng.choice([0.1, 1.0, 10.0])))
            t += rng.expovariate(rate)
    for _ in range(rng.randint(0, 10)):
        loop.push(rng.uniform(0.0, horizon), Crash())
    for _ in range(rng.randint(0, 10)):
        loop.push(rng.uniform(0.0, horizon), Orphaned())
    for _ in range(rng.randint(0, 3)):
        # A new idle timeout, and a minimum lowered, kept or raised (refused if it does not fit).
        pool = rng.choice(pools[:3])
        config = core.pools[pool].config
        changed = dataclasses.replace(
            config,
            min_environments=rng.choice(
                [0, config.min_environments, min(config.max_concurrency, config.min_environments + 1)]
            ),
            idle_timeout_s=rng.choice([5.0, 60.0, 600.0]),
        )
        loop.push(rng.uniform(0.0, horizon), Reconfigure(pool, changed))
    loop.run()
    loop.check_all_answered()
    settle_check(core, loop)
