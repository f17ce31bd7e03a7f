"""The backend interface serving uses to start and stop execution environments."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from coldbrew.errors import ColdbrewError


@dataclass(frozen=True)
class WorkerSpec:
    """Everything needed to start one execution environment of a variant."""

    model_dir: str
    memory_mb: int
    environment_concurrency: int = 1
    """Invocations one environment serves at once: 1 for serverless, several for an instance."""
    env: dict[str, str] = field(default_factory=dict)
    command: str | None = None
    """A user's own server command (``exec:`` images); None runs coldbrew's worker."""
    labels: dict[str, str] = field(default_factory=dict)
    """Cache directories (the model data, a downloaded source directory) and how the user named
    them (its ModelDataUrl, its SAGEMAKER_SUBMIT_DIRECTORY): errors show the user's names, the
    cache is coldbrew's business."""
    fresh: bool = False
    """Start a fresh interpreter, never a fork of the runtime's zygote: the model's requirements
    replace a package the zygote may have imported."""
    nice: int = 0
    """Niceness of the worker (0-19): a batch transform job's workers run at 10, below endpoints'."""
    runtime: str = "generic"
    """The set of framework imports it needs (``coldbrew.worker.runtimes``): picks its zygote."""
    tenant: str = ""
    """Whose environment this is (the endpoint's or job's name): when the gateway runs as root,
    each tenant's workers run as a user of their own (:mod:`coldbrew.backends.containment`)."""
    network_isolation: bool = False
    """CreateModel's EnableNetworkIsolation: the worker gets a network namespace with no network."""
    output_fd: int | None = None
    """Where the worker's stdout and stderr go: the write end of a pipe to the log collector
    (``coldbrew.logs``), one per environment. The backend hands it to the worker and leaves
    closing its own copy to the caller; None leaves them the gateway's own, as a child's are."""
    environment: int | None = None
    """The scaling core's id of the environment being started: a backend whose memory is split
    among nodes names environments by it when it asks for room (``SplitMemory``)."""


class WorkerStartError(ColdbrewError):
    """The worker did not become ready; ``str()`` is the loader's error, fit for FailureReason.

    Never a response as it is: a cold start turns it into a ModelError, a deploy into DeployError.
    """


class WorkerProcess(Protocol):
    pid: int
    address: str
    """``unix:/path`` or ``http://127.0.0.1:port``."""
    setup_ms: float

    def rss_bytes(self) -> int: ...

    @property
    def memory_enforced(self) -> bool:
        """True when the kernel enforces the memory size (a cgroup); else serving watches RSS."""

    def oom_killed(self) -> bool:
        """Whether the kernel stopped the worker for exceeding its memory size."""

    def is_alive(self) -> bool: ...

    async def stop(self, grace_s: float = 2.0) -> None: ...


@runtime_checkable
class Retiring(Protocol):
    """A worker that may come to exit on its own, not by a choice of serving's (one forked by a
    zygote follows the zygote when it dies)."""

    def retiring(self) -> bool:
        """True once it is exiting, or about to: serving routes nothing new to it."""


@runtime_checkable
class RuntimeHelpers(Protocol):
    """A backend that keeps a helper process per runtime (the local backend's zygotes): serving
    tells it which runtimes the deployed pools use, so it stops the others' after an idle period,
    and counts their memory in the budget (issue 18)."""

    def use_runtimes(self, runtimes: Collection[str]) -> None:
        """The runtimes of every deployed pool (endpoint variants and jobs), now."""

    def helper_rss_bytes(self) -> int:
        """Resident memory of the helpers."""


@runtime_checkable
class ClusterMemory(Protocol):
    """A backend whose room is a cluster's, not this machine's (the Ray backend): unless
    ``COLDBREW_MEMORY_BUDGET_MB`` is set, serving's memory budget is what it reports, read again as
    nodes join and leave (the helpers' memory still comes out of it, as ``RuntimeHelpers`` say)."""

    def memory_capacity_mb(self) -> int:
        """The memory environments may hold on all the nodes together, now."""


@dataclass(frozen=True)
class NodeShortfall:
    """A node a waiting start could go to: the environments on it (``WorkerSpec.environment``)
    and how much more memory it needs free for the start."""

    environments: tuple[int, ...]
    short_mb: int


@dataclass(frozen=True)
class RoomWanted:
    """A start that found no node with room though the budget had it: the nodes it could go to
    once environments on them stop, fewest megabytes to free first."""

    environment: int
    nodes: tuple[NodeShortfall, ...]


@runtime_checkable
class SplitMemory(Protocol):
    """A backend whose budget is the sum of nodes an environment must fit in whole (the Ray
    backend): a start that finds no node with room waits in the backend, and serving asks, each
    housekeeping round, which starts wait and where (the scaling core then releases idle
    environments on one of those nodes, as it would for a start the budget has no room for)."""

    def room_wanted(self) -> list[RoomWanted]:
        """The starts waiting for room on a node now, and the nodes that could make it."""


class Backend(Protocol):
    async def start(self, spec: WorkerSpec) -> WorkerProcess:
        """Start an environment and return once it answers; raise WorkerStartError otherwise."""

    def maintain(self) -> None:
        """Periodic upkeep on the event loop (restart helpers that died); must not block."""

    async def close(self) -> None: ...
