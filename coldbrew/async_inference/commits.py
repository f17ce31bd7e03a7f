"""Group commit: items submitted while one batch is being written go together in the next."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """``await submit(item)`` returns ``item``'s result once ``write`` (blocking, run on
    ``executor``, one result per item in order) has written a batch holding it; a write that
    raises fails every waiter of its batch."""

    def __init__(self, write: Callable[[list[T]], list[R]], executor: Executor) -> None:
        self._write = write
        self._executor = executor
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._run())
        return await asyncio.shield(future)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                results = await loop.run_in_executor(self._executor, self._write, [item for item, _ in batch])
            except Exception as exc:  # each waiter gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def drain(self) -> None:
        """Wait until everything submitted so far is written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
