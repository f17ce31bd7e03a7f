"""One live execution environment: a started worker and the connection to it.

Its scaling state (in flight, last used) is the scaling core's; this is only what it takes to reach
the worker and what the client is told when coldbrew had to stop it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coldbrew.backends.base import WorkerProcess
from coldbrew.backends.worker_client import WorkerClient


@dataclass(eq=False)
class Environment:
    id: int
    """The scaling core's id for it."""
    pool: int
    worker: WorkerProcess
    memory_mb: int
    client: WorkerClient = field(init=False)
    stop_reason: str | None = None
    """Why coldbrew stopped this worker (memory limit, timeout), told to the caller it affected."""

    def __post_init__(self) -> None:
        self.client = WorkerClient(self.worker.address)

    async def close(self) -> None:
        await self.client.aclose()
        await self.worker.stop()
