"""The zygotes' memory comes out of the memory budget (issue 18): the ``Helpers`` event; the
budget itself changes (issue 16): the ``Budget`` event; and a start that fits the budget but none
of its places (a Ray cluster's nodes) makes room on one: the ``Reclaim`` event."""

from __future__ import annotations

from coldbrew.scaling.core import CLUSTER_BUDGET, ScalingCore
from coldbrew.scaling.messages import (
    Arrival,
    Budget,
    Deploy,
    Finished,
    Helpers,
    Place,
    Purpose,
    Ready,
    Reclaim,
    Reject,
    RejectKind,
    Route,
    Start,
    Stop,
    StopReason,
    Warmed,
)
from tests.scaling.configs import serverless, transform_job
from tests.scaling.test_core import deployed, serve_cold


def test_zygote_memory_leaves_less_room_for_environments() -> None:
    core = ScalingCore(memory_budget_mb=3072)
    a = deployed(core, serverless("a", memory_mb=1024))
    b = deployed(core, serverless("b", memory_mb=1024))
    assert core.handle(Helpers(1200), 0.0) == []
    assert core.free_mb == 3072 - 1200
    serve_cold(core, a, 1, 1, at=0.0)
    # 1024 more would make 2048 + the zygotes' 1200 > 3072 (and b has no environment to wait for).
    assert core.handle(Arrival(b, 2), 1.0) == [
        Reject(
            2,
            RejectKind.THROTTLED,
            "The machine's memory budget of 3072 MB (zygotes hold 1200 MB of it) is held by busy "
            "environments; retry with backoff, or raise COLDBREW_MEMORY_BUDGET_MB.",
        )
    ]
    # An idle zygote stopped: its memory is room again.
    assert core.handle(Helpers(200), 2.0) == []
    assert core.handle(Arrival(b, 3), 3.0) == [Start(2, b, Purpose.DEMAND)]
    assert core.handle(Ready(2), 3.5) == [Route(3, 2, cold=True)]


def test_a_load_check_waiting_for_room_starts_when_a_zygote_stops() -> None:
    core = ScalingCore(memory_budget_mb=2048)
    core.handle(Helpers(1500), 0.0)
    pool = core.add_pool(serverless(memory_mb=1024))
    assert core.handle(Deploy(pool, check=True), 0.0) == []
    assert core.handle(Helpers(1600), 1.0) == []  # grown: still no room
    assert core.handle(Helpers(300), 2.0) == [Start(1, pool, Purpose.CHECK)]


# --- the budget itself changes (issue 16: a Ray cluster's nodes joining or leaving) -----------


def test_a_budget_that_grows_makes_room_and_one_that_shrinks_stops_nothing() -> None:
    core = ScalingCore(memory_budget_mb=2048)
    a = deployed(core, serverless("a", memory_mb=1024))
    b = deployed(core, serverless("b", memory_mb=1024))
    serve_cold(core, a, 1, 1, at=0.0)
    serve_cold(core, a, 2, 2, at=0.0)
    # Full, and b has no environment to wait for: throttled.
    [reject] = core.handle(Arrival(b, 3), 1.0)
    assert isinstance(reject, Reject) and reject.kind is RejectKind.THROTTLED
    # A node joined: room for b.
    assert core.handle(Budget(3072), 2.0) == []
    assert core.free_mb == 1024
    assert core.handle(Arrival(b, 4), 2.0) == [Start(3, b, Purpose.DEMAND)]
    assert core.handle(Ready(3), 2.5) == [Route(4, 3, cold=True)]
    # A node left: what exists is not stopped for it, but no more starts until room is released.
    assert core.handle(Budget(2048), 3.0) == []
    assert core.free_mb == -1024 and len(core.envs) == 3


def test_a_load_check_waiting_for_room_starts_when_the_budget_grows() -> None:
    core = ScalingCore(memory_budget_mb=2048)
    core.handle(Helpers(1500), 0.0)
    pool = core.add_pool(serverless(memory_mb=1024))
    assert core.handle(Deploy(pool, check=True), 0.0) == []
    assert core.handle(Budget(2048), 1.0) == []  # unchanged: still no room
    assert core.handle(Budget(4096), 2.0) == [Start(1, pool, Purpose.CHECK)]


def test_a_clusters_budget_is_named_as_such_in_what_the_core_says() -> None:
    core = ScalingCore(memory_budget_mb=2048)
    core.wording = CLUSTER_BUDGET
    a = deployed(core, serverless("a", memory_mb=2048))
    b = deployed(core, serverless("b", memory_mb=1024))
    serve_cold(core, a, 1, 1, at=0.0)
    assert core.handle(Arrival(b, 2), 1.0) == [
        Reject(
            2,
            RejectKind.THROTTLED,
            "The Ray cluster's memory budget of 2048 MB is held by busy environments; retry with "
            "backoff, or add a node to the Ray cluster.",
        )
    ]
    big = core.add_pool(serverless("c", memory_mb=3072))
    [failed] = core.handle(Deploy(big, check=True), 2.0)
    assert "larger than the Ray cluster's memory budget of 2048 MB (the memory of its nodes)" in str(failed)


# --- room on one place (issue 16: the budget is the sum of a Ray cluster's nodes) --------------


def _three_idle_on_two_nodes() -> tuple[ScalingCore, int]:
    """Pools a, b, c with one idle 1024 MB environment each (1, 2, 3: used last in that order),
    and d's cold start of 1536 MB (environment 4), which the 6144 MB budget holds but, as the
    backend will say, no node does."""
    core = ScalingCore(memory_budget_mb=6144)
    pools = [deployed(core, serverless(name, memory_mb=1024)) for name in "abc"]
    for n, pool in enumerate(pools, start=1):
        serve_cold(core, pool, n, n, at=float(n))
        assert core.handle(Finished(n, n), n + 0.6) == []
    d = deployed(core, serverless("d", memory_mb=1536))
    assert core.handle(Arrival(d, 10), 5.0) == [Start(4, d, Purpose.DEMAND)]
    return core, d


def test_a_start_no_node_has_room_for_releases_idle_environments_on_the_first_node_freed_enough() -> None:
    core, _ = _three_idle_on_two_nodes()
    # Node one holds 1 and 3 and needs 1536 more free: both go, least recently used first, though
    # 1 alone would be the least used environment of the budget. Node two (2) comes second.
    actions = core.handle(Reclaim(4, (Place((3, 1), 1536), Place((2,), 512))), 6.0)
    assert actions == [Stop(1, StopReason.EVICTED), Stop(3, StopReason.EVICTED)]
    assert core.evictions == 2 and sorted(core.envs) == [2, 4]
    assert core.free_mb == 6144 - 1024 - 1536
    # Asked again before the backend's book shows them gone: released ones are not released twice.
    assert core.handle(Reclaim(4, (Place((3, 1), 1536),)), 6.5) == []


def test_a_node_that_cannot_be_freed_enough_is_passed_over_and_busy_environments_are_kept() -> None:
    core, _ = _three_idle_on_two_nodes()
    a = core.envs[1].pool
    assert core.handle(Arrival(a, 11), 6.0) == [Route(11, 1, cold=False)]  # 1 is busy now
    # Node one: 1 (busy) and 3 would have to free 2048: it cannot. Node two: 2 frees 512.
    assert core.handle(Reclaim(4, (Place((1, 3), 2048), Place((2,), 512))), 6.5) == [
        Stop(2, StopReason.EVICTED)
    ]
    # No node that could be freed enough: nothing is released for nothing.
    core2, _ = _three_idle_on_two_nodes()
    assert core2.handle(Reclaim(4, (Place((1,), 2048), Place((2, 3), 4096))), 6.0) == []
    assert len(core2.envs) == 4


def test_minimums_the_requesters_own_pool_and_a_start_that_is_over_are_never_released_for() -> None:
    core = ScalingCore(memory_budget_mb=8192)
    kept = core.add_pool(serverless("kept", memory_mb=1024, min_environments=1))
    assert core.handle(Deploy(kept, check=False), 0.0) == [Start(1, kept, Purpose.MINIMUM)]
    assert core.handle(Ready(1), 0.5) == [Warmed(kept)]
    own = deployed(core, serverless("own", memory_mb=1024, max_concurrency=2))
    serve_cold(core, own, 1, 2, at=1.0)
    assert core.handle(Finished(2, 1), 1.6) == []
    assert core.handle(Arrival(own, 2), 2.0) == [Route(2, 2, cold=False)]
    assert core.handle(Arrival(own, 3), 2.1) == [Start(3, own, Purpose.DEMAND)]
    # Hedged: 2 frees up first and serves 3's request; 3 still starts, and 2 is idle again.
    assert core.handle(Finished(2, 2), 2.2) == [Route(3, 2, cold=False)]
    assert core.handle(Finished(2, 3), 2.3) == []
    # Environment 1 is "kept"'s minimum, 2 is the requester's own pool's: neither goes.
    assert core.handle(Reclaim(3, (Place((1, 2), 1024),)), 3.0) == []
    # Ready, or unknown: nothing waits for room any more.
    core.handle(Ready(3), 3.5)
    assert core.handle(Reclaim(3, (Place((1, 2), 1024),)), 4.0) == []
    assert core.handle(Reclaim(99, (Place((1, 2), 1024),)), 4.0) == []


def test_a_jobs_start_waits_for_room_and_releases_no_endpoints_environment() -> None:
    core = ScalingCore(memory_budget_mb=4096)
    a = deployed(core, serverless("a", memory_mb=1024))
    serve_cold(core, a, 1, 1, at=0.0)
    assert core.handle(Finished(1, 1), 0.6) == []
    job = core.add_pool(transform_job(instances=1, memory_mb=1024))
    core.handle(Deploy(job, check=False), 1.0)
    [start] = core.handle(Arrival(job, 2), 1.0)
    assert isinstance(start, Start)
    assert core.handle(Reclaim(start.env, (Place((1,), 1024),)), 2.0) == []
