"""One live execution environment: a started worker and the connection to it.

Its scaling state (in flight, last used) is the scaling core's; this is only what it takes to reach
the worker and what the client is told when coldbrew had to stop it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from coldbrew.backends.base import Retiring, WorkerProcess
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
    ready_at: float = field(default_factory=time.monotonic)
    """When its worker was ready (monotonic): the dashboard shows environments' ages."""
    served: int = 0
    """Invocations it has finished (the dashboard's requests served)."""

    _retiring: Callable[[], bool] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.client = WorkerClient(self.worker.address)
        # Looked up once: the invoke path asks for every invocation.
        self._retiring = self.worker.retiring if isinstance(self.worker, Retiring) else None

    def retiring(self) -> bool:
        """Its worker is exiting on its own (the zygote it was forked from died): it must be handed
        no new invocation."""
        return self._retiring is not None and self._retiring()

    async def close(self) -> None:
        await self.client.aclose()
        await self.worker.stop()
