"""The zygotes' memory comes out of the memory budget (issue 18): the ``Helpers`` event; and the
budget itself changes (issue 16): the ``Budget`` event."""

from __future__ import annotations

from coldbrew.scaling.core import CLUSTER_BUDGET, ScalingCore
from coldbrew.scaling.messages import (
    Arrival,
    Budget,
    Deploy,
    Helpers,
    Purpose,
    Ready,
    Reject,
    RejectKind,
    Route,
    Start,
)
from tests.scaling.configs import serverless
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
