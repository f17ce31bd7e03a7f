"""The scaling core's vocabulary: the configuration of a pool, the events it is told and the
actions it answers with.

Every message is a small frozen value. Environments, pools and requests are named by integers: the
core numbers pools and environments itself, and callers number their requests. Times are seconds
on whatever clock the caller drives the core with (``time.monotonic()`` live, virtual in the
simulator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """How one variant of one deployment scales: what the core needs to decide, nothing more."""

    endpoint: str
    variant: str
    serverless: bool
    memory_mb: int
    """Serverless: MemorySizeInMB. Provisioned: the instance type's memory."""
    max_concurrency: int
    """Serverless: MaxConcurrency, the most invocations served or waiting at once (past it, throttled).
    Provisioned: instance count times ``environment_concurrency``; past it requests queue on the
    instances, as they would on a container."""
    min_environments: int
    """Kept warm at all times: ProvisionedConcurrency, or every provisioned instance."""
    environment_concurrency: int = 1
    """Invocations one environment serves at once: 1 for serverless, several for an instance."""
    idle_timeout_s: float = 300.0
    keepalive: str = "fixed"
    """Keep-alive policy name (:func:`coldbrew.scaling.keepalive.make_policy`)."""
    scale_to_zero: bool = False
    """Provisioned only: instances start on demand, up to the count, and are released after the
    idle timeout (an asynchronous endpoint's instances); ``min_environments`` is then 0."""
    preemptible: bool = False
    """A batch transform job's pool: it yields memory, never takes it. Its environments, busy or
    not, are released when another pool's start needs room (their invocations fail, and the job
    retries them), and its own starts only use memory that is free."""
    start_with: int = 0
    """Environments started at deploy, the check included: a transform job starts all its instances
    at once, as SageMaker does, rather than one per invocation that finds none free. Only in memory
    that is free (never evicting for it); released when idle like any other."""

    @property
    def max_environments(self) -> int:
        return max(1, math.ceil(self.max_concurrency / self.environment_concurrency))


class Purpose(Enum):
    """Why an environment was started."""

    DEMAND = "demand"
    """A cold start for an invocation that found no free environment."""
    PREWARM = "prewarm"
    """The keep-alive policy expects an invocation soon."""
    MINIMUM = "minimum"
    """ProvisionedConcurrency or a provisioned instance: kept warm at all times."""
    CHECK = "check"
    """Proof that a scale-to-zero variant's model loads before its endpoint goes InService; the
    environment then stays as the variant's first warm one until the keep-alive releases it."""


# --- events: what the caller tells the core -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deploy:
    """Bring a new pool to service: start its minimum environments and, with ``check``, one more
    for a scale-to-zero variant to prove the model loads. Answered by ``Warmed`` or ``WarmFailed``."""

    pool: int
    check: bool


@dataclass(frozen=True, slots=True)
class Reconfigure:
    """New weights and capacities for a running pool. Answered by ``Refused`` (and nothing changes)
    when a higher minimum would not fit in the memory budget."""

    pool: int
    config: PoolConfig


@dataclass(frozen=True, slots=True)
class Close:
    """Take no more invocations; stop each environment once it is idle; ``Drained`` when none is left."""

    pool: int


@dataclass(frozen=True, slots=True)
class Forget:
    """Stop every environment of the pool now, busy or not (a drain that ran out of time)."""

    pool: int


@dataclass(frozen=True, slots=True)
class Arrival:
    pool: int
    request: int


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """A waiting request was given up by its client before it got an environment."""

    pool: int
    request: int


@dataclass(frozen=True, slots=True)
class Ready:
    """An environment the core asked for has started and answers."""

    env: int


@dataclass(frozen=True, slots=True)
class StartFailed:
    env: int
    reason: str
    """The loader's error, fit for a FailureReason."""


@dataclass(frozen=True, slots=True)
class Finished:
    """An invocation routed to ``env`` is over (whatever its outcome); the environment still runs."""

    env: int
    request: int
    cores: float | None = None
    """The cores it kept busy while it ran, as its worker measured them (CPU time over the time it
    ran or blocked, not counting the time it waited for a core); None when not known (a user's
    own server, the simulator)."""


@dataclass(frozen=True, slots=True)
class Lost:
    """An environment stopped without being asked to (it crashed, or was stopped for its memory or
    a timeout). Invocations in flight on it are the caller's to fail."""

    env: int


@dataclass(frozen=True, slots=True)
class Retire:
    """A ready environment will exit on its own soon (the zygote it was forked from died, and its
    worker follows it): it takes no new invocation, those in flight on it finish, then it is
    stopped; its pool starts a replacement as it would after a loss."""

    env: int


@dataclass(frozen=True, slots=True)
class Helpers:
    """The machine's helpers (the zygotes workers are forked from) now hold ``mb`` of memory: it
    comes out of the budget before any environment's (issue 18)."""

    mb: int


@dataclass(frozen=True, slots=True)
class Budget:
    """The memory budget is now ``mb``: a backend whose room changes (a Ray cluster's nodes
    joining or leaving) reports it; an explicit ``COLDBREW_MEMORY_BUDGET_MB`` is never changed."""

    mb: int


@dataclass(frozen=True, slots=True)
class Place:
    """One part of the budget that a start must fit in whole (a Ray node): the environments on it,
    and how much more memory it needs free for the start."""

    envs: tuple[int, ...]
    short_mb: int


@dataclass(frozen=True, slots=True)
class Reclaim:
    """The start of ``env`` fits the budget but no single place of it (the budget is the sum of a
    Ray cluster's nodes): it waits in the backend for room on one. ``places`` are where it could
    go, in the backend's order of preference. The core releases idle environments of other pools
    on the first place where that frees enough, as a start that does not fit the budget would; on
    none, if no place can be freed so."""

    env: int
    places: tuple[Place, ...]


@dataclass(frozen=True, slots=True)
class Tick:
    """Time has passed: apply the keep-alive (release, pre-warm) and keep minimums."""


Event = (
    Deploy
    | Reconfigure
    | Close
    | Forget
    | Arrival
    | Withdrawn
    | Ready
    | StartFailed
    | Finished
    | Lost
    | Retire
    | Helpers
    | Budget
    | Reclaim
    | Tick
)


# --- actions: what the core asks the caller to do -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Start an environment for ``pool``; answer with ``Ready(env)`` or ``StartFailed(env)``."""

    env: int
    pool: int
    purpose: Purpose


class StopReason(Enum):
    IDLE = "idle"
    """Released by the keep-alive policy."""
    EVICTED = "evicted"
    """Released to make room in the memory budget for another variant's cold start."""
    CLOSED = "closed"
    """Its pool was replaced or deleted."""
    RETIRED = "retired"
    """Its worker was exiting on its own (``Retire``) and has finished what it had in flight."""


@dataclass(frozen=True, slots=True)
class Stop:
    env: int
    reason: StopReason


@dataclass(frozen=True, slots=True)
class Route:
    """Send ``request`` to ``env``; ``cold`` if it waited for that environment's own start."""

    request: int
    env: int
    cold: bool


class RejectKind(Enum):
    THROTTLED = "throttled"
    """MaxConcurrency reached, or no room in the memory budget."""
    LOAD_FAILED = "load_failed"
    """The environment started for it failed to load the model."""
    CLOSED = "closed"
    """The pool is being replaced or deleted."""


@dataclass(frozen=True, slots=True)
class Reject:
    request: int
    kind: RejectKind
    message: str


@dataclass(frozen=True, slots=True)
class Warmed:
    """A deployed pool holds its minimum environments (and its load check passed): it may serve."""

    pool: int


@dataclass(frozen=True, slots=True)
class WarmFailed:
    pool: int
    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A ``Reconfigure`` that was not applied: ``reason`` says why (the memory budget)."""

    pool: int
    reason: str


@dataclass(frozen=True, slots=True)
class Drained:
    """A closed pool has no environment left and is forgotten."""

    pool: int


Action = Start | Stop | Route | Reject | Warmed | WarmFailed | Refused | Drained
