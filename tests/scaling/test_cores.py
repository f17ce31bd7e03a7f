"""The scaling core's rule for cores (``cpu_slots``): a serverless variant runs at most as many
invocations at once as keep the machine's cores busy, by the cores its invocations were measured to
use; the rest wait for a core, counted against MaxConcurrency, and take the most recently used
environment. Events in, exact actions out, under a virtual clock."""

from __future__ import annotations

from coldbrew.scaling.core import ScalingCore
from coldbrew.scaling.messages import (
    Arrival,
    Deploy,
    Finished,
    Lost,
    Purpose,
    Ready,
    Reject,
    RejectKind,
    Retire,
    Route,
    Start,
    Warmed,
    Withdrawn,
)
from tests.scaling.configs import serverless

DEMAND = Purpose.DEMAND


def warm_pool(
    core: ScalingCore, environments: int, max_concurrency: int = 8, cores: float | None = 1.0
) -> int:
    """A deployed serverless pool holding ``environments`` idle environments (numbered on from the
    core's last, the last one used last), whose invocations were measured at ``cores`` each (None:
    never measured)."""
    pool = core.add_pool(serverless(max_concurrency=max_concurrency))
    assert core.handle(Deploy(pool, check=False), 0.0) == [Warmed(pool)]
    requests = range(1000 * pool, 1000 * pool + environments)
    starts = [core.handle(Arrival(pool, r), 0.0) for r in requests]
    envs = [start.env for [start] in starts if isinstance(start, Start)]
    assert len(envs) == environments
    for request, env in zip(requests, envs, strict=True):
        assert core.handle(Ready(env), 1.0) == [Route(request, env, cold=True)]
    for n, (request, env) in enumerate(zip(requests, envs, strict=True)):
        assert core.handle(Finished(env, request, cores), 2.0 + n / 100) == []
    return pool


def test_invocations_beyond_the_cores_wait_for_one_and_take_the_environment_that_frees() -> None:
    core = ScalingCore(memory_budget_mb=65536, cpu_slots=3)
    pool = warm_pool(core, environments=8)
    state = core.pools[pool]
    assert core.cpu_limit(state) == 3
    started = state.stats.cold_starts
    # Three run (most recently used environments first); the next five wait with five environments
    # free, and nothing is started for them.
    routes = [core.handle(Arrival(pool, r), 3.0) for r in range(11, 19)]
    assert routes[:3] == [[Route(11, 8, cold=False)], [Route(12, 7, cold=False)], [Route(13, 6, cold=False)]]
    assert routes[3:] == [[]] * 5
    assert state.in_flight == 3 and list(state.waiters) == [14, 15, 16, 17, 18]
    assert state.stats.cold_starts == started
    # Each finish hands its environment to the oldest waiter: the same three stay in use.
    assert core.handle(Finished(7, 12, 1.0), 3.1) == [Route(14, 7, cold=False)]
    assert core.handle(Finished(8, 11, 1.0), 3.2) == [Route(15, 8, cold=False)]
    assert core.handle(Finished(6, 13, 1.0), 3.3) == [Route(16, 6, cold=False)]
    assert core.handle(Finished(7, 14, 1.0), 3.4) == [Route(17, 7, cold=False)]
    assert core.handle(Finished(8, 15, 1.0), 3.5) == [Route(18, 8, cold=False)]
    assert state.waiters == {}
    served = {e.id for e in state.envs.values() if e.last_used > 3.0}
    assert served == {6, 7, 8}


def test_waiting_for_a_core_counts_against_max_concurrency() -> None:
    core = ScalingCore(memory_budget_mb=65536, cpu_slots=2)
    pool = warm_pool(core, environments=4, max_concurrency=4)
    for r in (11, 12, 13, 14):
        core.handle(Arrival(pool, r), 3.0)
    assert core.pools[pool].in_flight == 2 and len(core.pools[pool].waiters) == 2
    [reject] = core.handle(Arrival(pool, 15), 3.0)
    assert isinstance(reject, Reject) and reject.kind is RejectKind.THROTTLED


def test_no_environment_is_started_for_a_request_that_waits_only_for_a_core() -> None:
    core = ScalingCore(memory_budget_mb=65536, cpu_slots=2)
    pool = warm_pool(core, environments=1)
    assert core.handle(Arrival(pool, 11), 3.0) == [Route(11, 1, cold=False)]
    # One runs, one core is left: this one gets an environment of its own.
    assert core.handle(Arrival(pool, 12), 3.0) == [Start(2, pool, DEMAND)]
    # Two run or start: the cores are taken, so the next waits, and starts nothing.
    assert core.handle(Arrival(pool, 13), 3.0) == []
    assert core.handle(Ready(2), 3.5) == [Route(12, 2, cold=True)]
    assert core.handle(Finished(1, 11, 1.0), 3.6) == [Route(13, 1, cold=False)]
    assert core.pools[pool].stats.cold_starts == 2  # the one warm_pool made, and request 12's


def test_invocations_that_use_little_cpu_are_held_back_only_as_far_as_they_use_it() -> None:
    core = ScalingCore(memory_budget_mb=65536, cpu_slots=3)
    waiting = warm_pool(core, environments=8, cores=0.05)  # waits on I/O: 3 / 0.05 = 60 at once
    threaded = warm_pool(core, environments=4, cores=2.0)  # two threads busy: 3 / 2 = 2 at once
    assert core.cpu_limit(core.pools[waiting]) == 60
    assert core.cpu_limit(core.pools[threaded]) == 2
    for r in range(101, 109):
        assert len(core.handle(Arrival(waiting, r), 3.0)) == 1
    assert core.pools[waiting].in_flight == 8
    for r in range(201, 204):
        core.handle(Arrival(threaded, r), 3.0)
    assert core.pools[threaded].in_flight == 2 and list(core.pools[threaded].waiters) == [203]


def test_a_variant_not_measured_or_a_core_without_cpu_slots_holds_nothing_back() -> None:
    unmeasured = ScalingCore(memory_budget_mb=65536, cpu_slots=1)
    pool = warm_pool(unmeasured, environments=4, cores=None)
    assert unmeasured.cpu_limit(unmeasured.pools[pool]) is None
    for r in range(11, 15):
        assert len(unmeasured.handle(Arrival(pool, r), 3.0)) == 1
    no_slots = ScalingCore(memory_budget_mb=65536)
    pool = warm_pool(no_slots, environments=4)
    assert no_slots.cpu_limit(no_slots.pools[pool]) is None
    for r in range(11, 15):
        assert len(no_slots.handle(Arrival(pool, r), 3.0)) == 1


def test_each_variant_has_the_cores_to_itself() -> None:
    # One variant's long invocations do not keep another's waiting: the rule is per variant.
    core = ScalingCore(memory_budget_mb=65536, cpu_slots=1)
    busy = warm_pool(core, environments=2)
    other = warm_pool(core, environments=1)
    assert core.handle(Arrival(busy, 11), 3.0) == [Route(11, 2, cold=False)]
    assert core.handle(Arrival(busy, 12), 3.0) == []
    assert core.handle(Arrival(other, 21), 3.0) == [Route(21, 3, cold=False)]


def test_the_limit_follows_the_measured_cores() -> None:
    core = ScalingCore(memory_budget_mb=65536, cpu_slots=2)
    pool = warm_pool(core, environments=6)
    state = core.pools[pool]
    assert core.cpu_limit(state) == 2
    for r in range(11, 17):
        core.handle(Arrival(pool, r), 3.0)
    assert state.in_flight == 2 and len(state.waiters) == 4
    # The model turns to waiting on I/O: one invocation moves the figure by a tenth of the way...
    assert core.handle(Finished(6, 11, 0.05), 3.1) == [Route(13, 6, cold=False)]
    assert state.cores is not None and abs(state.cores - 0.905) < 1e-9
    assert core.cpu_limit(state) == 2
    # ...and as it falls, the limit rises and the waiters take the free environments.
    running = {5: 12, 6: 13}
    at = 3.2
    while state.waiters:
        env, request = min(running.items())
        del running[env]
        for action in core.handle(Finished(env, request, 0.05), at):
            assert isinstance(action, Route)
            running[action.env] = action.request
        at += 0.1
    assert at < 4.0  # within a few invocations
    assert core.cpu_limit(state) >= 3 and state.in_flight == len(running) >= 3


def test_a_loss_frees_a_core_for_a_waiter_and_a_free_environment() -> None:
    core = ScalingCore(memory_budget_mb=65536, cpu_slots=1)
    pool = warm_pool(core, environments=2)
    assert core.handle(Arrival(pool, 11), 3.0) == [Route(11, 2, cold=False)]
    assert core.handle(Arrival(pool, 12), 3.0) == []
    # The busy environment dies: its invocation is the caller's to fail; the waiter runs now.
    assert core.handle(Lost(2), 3.1) == [Route(12, 1, cold=False)]


def test_a_withdrawn_waiter_for_a_core_leaves_nothing_behind() -> None:
    core = ScalingCore(memory_budget_mb=65536, cpu_slots=1)
    pool = warm_pool(core, environments=2)
    core.handle(Arrival(pool, 11), 3.0)
    assert core.handle(Arrival(pool, 12), 3.0) == []
    assert core.handle(Withdrawn(pool, 12), 3.5) == []
    assert core.handle(Finished(2, 11, 1.0), 4.0) == []
    assert core.pools[pool].waiters == {} and core.pools[pool].in_flight == 0


def test_invocations_on_a_retiring_environment_count_against_max_concurrency() -> None:
    # Without cores to share too. The retiring environment's replacement (its minimum) is free,
    # but the one invocation MaxConcurrency allows still runs on the retiring one: throttled.
    core = ScalingCore(memory_budget_mb=65536)
    pool = core.add_pool(serverless(max_concurrency=1, min_environments=1))
    assert core.handle(Deploy(pool, check=False), 0.0) == [Start(1, pool, Purpose.MINIMUM)]
    assert core.handle(Ready(1), 1.0) == [Warmed(pool)]
    assert core.handle(Arrival(pool, 11), 2.0) == [Route(11, 1, cold=False)]
    assert core.handle(Retire(1), 2.1) == [Start(2, pool, Purpose.MINIMUM)]
    assert core.handle(Ready(2), 2.5) == []
    [reject] = core.handle(Arrival(pool, 12), 3.0)
    assert isinstance(reject, Reject) and reject.kind is RejectKind.THROTTLED
    # Once it is done (and the retiring one stopped), the replacement serves.
    core.handle(Finished(1, 11), 3.5)
    assert core.handle(Arrival(pool, 13), 4.0) == [Route(13, 2, cold=False)]
