"""Where an environment goes: a pure function of the nodes' state and what the environment needs.

The backend keeps the book (what it has placed on each node); Ray reports each node's totals.
Nothing here reads a clock or the cluster, so the rules are tested without one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MB_PER_VCPU = 1769
"""Lambda's rule, which SageMaker Serverless follows: one vCPU per 1,769 MB of memory size."""


def cpus_for(memory_mb: int) -> float:
    """The vCPUs an environment of ``memory_mb`` is accounted for (fractional, as Ray's are)."""
    return memory_mb / MB_PER_VCPU


@dataclass(frozen=True)
class NodeState:
    node_id: str
    memory_mb: int
    """What coldbrew may place on the node: Ray's ``memory`` resource of the node."""
    cpus: float
    """Ray's ``CPU`` resource of the node."""
    used_memory_mb: int = 0
    """Held by environments, starts in progress and the node's zygotes (``helpers_mb``)."""
    used_cpus: float = 0.0
    helpers_mb: int = 0
    models: frozenset[str] = frozenset()
    """Digests of the models the node's artifact cache holds."""
    environments: Mapping[str, int] = field(default_factory=dict)
    """Live environments on the node, by tenant (endpoint or job)."""
    alive: bool = True

    def fits(self, memory_mb: int) -> bool:
        # A small tolerance: 3 x 1769/1769 vCPU must fit 3 vCPUs despite rounding.
        return (
            self.alive
            and self.used_memory_mb + memory_mb <= self.memory_mb
            and self.used_cpus + cpus_for(memory_mb) <= self.cpus + 1e-9
        )


@dataclass(frozen=True)
class PlacementRequest:
    memory_mb: int
    digest: str
    tenant: str


def place(nodes: Sequence[NodeState], request: PlacementRequest) -> str | None:
    """The node for one more environment of ``request.tenant``, or None if none has room.

    Among the nodes with room, in order: fewest environments of the same tenant (an endpoint's
    environments spread, so one node's loss costs it a part, not all); then a node whose cache
    already holds the model (no transfer on the cold start); then the most memory left (load
    spreads across endpoints); then the node id, so the choice is deterministic.
    """
    fitting = [n for n in nodes if n.fits(request.memory_mb)]
    if not fitting:
        return None
    best = min(
        fitting,
        key=lambda n: (
            n.environments.get(request.tenant, 0),
            request.digest not in n.models,
            -(n.memory_mb - n.used_memory_mb),
            n.node_id,
        ),
    )
    return best.node_id


def shortfalls(nodes: Sequence[NodeState], memory_mb: int) -> list[tuple[str, int]]:
    """For a start of ``memory_mb`` that ``place`` found no node for: each live node that could
    hold it with only its zygotes beside it, and how many megabytes more must be freed there,
    fewest first (then by node id). The vCPUs a node lacks count as the memory whose release
    frees them (1,769 MB each): an environment's vCPUs are its memory's."""
    cpus = cpus_for(memory_mb)
    short: list[tuple[int, str]] = []
    for n in nodes:
        if not n.alive or n.memory_mb - n.helpers_mb < memory_mb or n.cpus + 1e-9 < cpus:
            continue
        memory = n.used_memory_mb + memory_mb - n.memory_mb
        vcpus = math.ceil((n.used_cpus + cpus - n.cpus) * MB_PER_VCPU - 1e-6)
        if max(memory, vcpus) > 0:
            short.append((max(memory, vcpus), n.node_id))
    return [(node_id, mb) for mb, node_id in sorted(short)]


def explain_full(nodes: Sequence[NodeState], memory_mb: int) -> str:
    """Why ``place`` found no node, fit for an error message."""
    alive = [n for n in nodes if n.alive]
    if not alive:
        return "the Ray cluster has no live node with a coldbrew agent"
    largest = max(n.memory_mb for n in alive)
    if memory_mb > largest:
        return (
            f"MemorySizeInMB {memory_mb} is more than any node of the Ray cluster offers "
            f"(the largest has {largest} MB); choose a smaller memory size or add a larger node"
        )
    free = ", ".join(
        f"{n.node_id[:8]}: {n.memory_mb - n.used_memory_mb} MB, {n.cpus - n.used_cpus:.2f} vCPU free"
        for n in alive
    )
    return (
        f"no node of the Ray cluster has {memory_mb} MB and {cpus_for(memory_mb):.2f} vCPU free "
        f"({free}); add a node or lower the endpoints' concurrency"
    )
