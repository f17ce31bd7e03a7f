"""One execution environment: a started worker, the connection to it, and its bookkeeping."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from coldbrew.backends.base import WorkerProcess
from coldbrew.backends.worker_client import WorkerClient

_ids = itertools.count(1)


@dataclass(eq=False)
class Environment:
    worker: WorkerProcess
    memory_mb: int
    capacity: int
    """Invocations it serves at once: 1 for serverless, several for a provisioned instance."""
    client: WorkerClient = field(init=False)
    id: int = field(default_factory=lambda: next(_ids))
    in_flight: int = 0
    invocations: int = 0
    last_used: float = field(default_factory=time.monotonic)
    closing: bool = False
    stop_reason: str | None = None
    """Why coldbrew stopped this worker (memory limit, timeout), told to the caller it affected."""

    def __post_init__(self) -> None:
        self.client = WorkerClient(self.worker.address)

    @property
    def idle(self) -> bool:
        return self.in_flight == 0

    @property
    def has_room(self) -> bool:
        return self.in_flight < self.capacity and self.stop_reason is None

    async def close(self) -> None:
        await self.client.aclose()
        await self.worker.stop()
