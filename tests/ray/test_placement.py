"""The Ray backend's placement rules, as a pure function, and serving's budget from the cluster's
memory (no Ray: part of the default run)."""

from __future__ import annotations

import asyncio
from typing import Any

from coldbrew.backends.base import WorkerSpec, WorkerStartError
from coldbrew.backends.ray.backend import _capacity_mb, _listed_memory_mb, _Node
from coldbrew.backends.ray.messages import AgentInfo
from coldbrew.backends.ray.placement import (
    NodeState,
    PlacementRequest,
    cpus_for,
    explain_full,
    place,
    shortfalls,
)
from coldbrew.scaling.core import CLUSTER_BUDGET, MACHINE_BUDGET
from coldbrew.serving.service import Serving

DIGEST = "a" * 64


def node(node_id: str, memory_mb: int = 4096, cpus: float = 4.0, **kwargs: object) -> NodeState:
    return NodeState(node_id=node_id, memory_mb=memory_mb, cpus=cpus, **kwargs)  # type: ignore[arg-type]


def test_an_endpoints_environments_spread_before_they_share_a_node() -> None:
    nodes = [node("a", environments={"ep": 1}, models=frozenset({DIGEST})), node("b")]
    assert place(nodes, PlacementRequest(1024, DIGEST, "ep")) == "b"


def test_a_node_that_holds_the_model_is_preferred_to_one_with_more_memory_free() -> None:
    nodes = [node("a", used_memory_mb=2048, models=frozenset({DIGEST})), node("b")]
    assert place(nodes, PlacementRequest(1024, DIGEST, "ep")) == "a"
    assert place(nodes, PlacementRequest(1024, "b" * 64, "ep")) == "b"


def test_memory_and_the_vcpus_it_implies_are_respected_per_node() -> None:
    assert cpus_for(1769) == 1.0
    full = node("a", memory_mb=2048, used_memory_mb=1024)
    assert place([full], PlacementRequest(1025, DIGEST, "ep")) is None
    assert place([full], PlacementRequest(1024, DIGEST, "ep")) == "a"
    # Memory left, but not the vCPUs 3072 MB is accounted for (1.74 of 1).
    assert place([node("c", memory_mb=8192, cpus=1.0)], PlacementRequest(3072, DIGEST, "ep")) is None
    # Three environments of exactly one vCPU fill three vCPUs despite rounding.
    three = node("d", memory_mb=3 * 1769, cpus=3.0, used_memory_mb=2 * 1769, used_cpus=2 * cpus_for(1769))
    assert place([three], PlacementRequest(1769, DIGEST, "ep")) == "d"


def test_dead_nodes_are_never_chosen_and_a_full_cluster_says_why() -> None:
    nodes = [node("dead", alive=False), node("small", memory_mb=512)]
    assert place(nodes, PlacementRequest(1024, DIGEST, "ep")) is None
    assert "more than any node" in explain_full(nodes, 1024)
    busy = [node("n1", memory_mb=2048, used_memory_mb=2048)]
    assert "add a node" in explain_full(busy, 1024)
    assert "no live node" in explain_full([node("x", alive=False)], 1024)


def test_a_start_no_node_has_room_for_names_the_nodes_that_could_make_it_fewest_megabytes_first() -> None:
    nodes = [
        node("full", memory_mb=2048, used_memory_mb=2048, used_cpus=1.0),
        node("half", memory_mb=2048, used_memory_mb=1280, used_cpus=0.5),
        # Its zygotes hold so much that even empty it could not hold 1536 MB.
        node("zygotes", memory_mb=2048, used_memory_mb=1024, helpers_mb=1024),
        node("dead", memory_mb=8192, used_memory_mb=8000, alive=False),
        node("small", memory_mb=1024),
    ]
    assert place(nodes, PlacementRequest(1536, DIGEST, "ep")) is None
    assert shortfalls(nodes, 1536) == [("half", 768), ("full", 1536)]
    # The vCPUs a node lacks count as the memory whose environments hold them: 1,024 MB needs
    # 0.579 vCPU, 0.25 is free, and 0.329 vCPU is what 582 MB of environments hold.
    few = node("few", memory_mb=8192, cpus=1.0, used_memory_mb=1024, used_cpus=0.75)
    assert shortfalls([few], 1024) == [("few", 582)]


def test_a_nodes_zygotes_count_against_its_memory() -> None:
    loop = asyncio.new_event_loop()
    try:
        ready = loop.create_future()
        ready.set_result(AgentInfo("a", "127.0.0.1", 1))
        node = _Node("a", "127.0.0.1", memory_mb=2048, cpus=4.0, agent=None, ready=ready)
        assert node.state().fits(2048)
        node.zygote_rss_bytes = 200 * 1024 * 1024  # what the agent last reported
        assert node.state().used_memory_mb == 200
        assert not node.state().fits(2048) and node.state().fits(1848)
    finally:
        loop.close()


def test_the_clusters_memory_is_the_sum_of_its_live_nodes() -> None:
    loop = asyncio.new_event_loop()
    try:
        starting = loop.create_future()  # an agent still starting: its node counts already
        nodes = [
            _Node("a", "10.0.0.1", memory_mb=2048, cpus=2.0, agent=None, ready=starting),
            _Node("b", "10.0.0.2", memory_mb=4096, cpus=4.0, agent=None, ready=starting),
            _Node("c", "10.0.0.3", memory_mb=8192, cpus=8.0, agent=None, ready=starting, dead=True),
        ]
        assert _capacity_mb(nodes) == 6144
    finally:
        loop.close()
    listing = [
        {"NodeID": "a", "Alive": True, "Resources": {"memory": 2048 * 2**20, "CPU": 2.0}},
        {"NodeID": "b", "Alive": False, "Resources": {"memory": 4096 * 2**20}},
        {"NodeID": "h", "Alive": True, "Resources": {"CPU": 1.0}},  # `ray start --memory 0`
    ]
    assert _listed_memory_mb(listing) == 2048


class ClusterBackend:
    """A backend whose room is a cluster's (as the Ray backend's): serving's budget follows it."""

    def __init__(self, capacity_mb: int) -> None:
        self.capacity_mb = capacity_mb

    def memory_capacity_mb(self) -> int:
        return self.capacity_mb

    async def start(self, spec: WorkerSpec) -> Any:
        raise WorkerStartError("not in this test")

    def maintain(self) -> None:
        pass

    async def close(self) -> None:
        pass


def test_servings_budget_follows_the_clusters_memory_unless_set() -> None:
    async def scenario() -> None:
        backend = ClusterBackend(5120)
        serving = Serving(backend, None, None, 60.0)  # type: ignore[arg-type]
        explicit = Serving(ClusterBackend(5120), None, None, 60.0, memory_budget_mb=1000)  # type: ignore[arg-type]
        assert serving.pools.core.memory_budget_mb == 5120
        # Its messages name the cluster's budget, and a node as the way to more of it.
        assert serving.pools.core.wording == CLUSTER_BUDGET
        assert explicit.pools.core.wording == MACHINE_BUDGET
        await serving.start()
        await explicit.start()
        try:
            backend.capacity_mb = 7680  # a node joined
            for _ in range(400):
                if serving.pools.core.memory_budget_mb == 7680:
                    break
                await asyncio.sleep(0.05)
            assert serving.pools.core.memory_budget_mb == 7680
            backend.capacity_mb = 2560  # two left
            for _ in range(400):
                if serving.pools.core.memory_budget_mb == 2560:
                    break
                await asyncio.sleep(0.05)
            assert serving.pools.core.memory_budget_mb == 2560
            # COLDBREW_MEMORY_BUDGET_MB wins over the cluster's.
            assert explicit.pools.core.memory_budget_mb == 1000
        finally:
            await serving.close()
            await explicit.close()

    asyncio.run(scenario())
