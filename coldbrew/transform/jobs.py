"""The transform jobs that run now: started when created, resumed when the server starts, stopped
on StopTransformJob.

The control plane calls ``submit`` and ``stop`` from its request threads; each job runs as a task on
the gateway's event loop. A job interrupted by a shutdown or a crash stays InProgress (or Stopping)
in the store, and the next start resumes it (or marks it Stopped): it is never marked Completed
before every output is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from coldbrew.serving.service import Serving
from coldbrew.transform.jobstore import COMPLETED, FAILED, STOPPED, STOPPING, JobStore
from coldbrew.transform.runner import JobRun
from coldbrew.transform.storage import Storage

log = logging.getLogger("coldbrew.transform")

T = TypeVar("T")


class TransformJobs:
    def __init__(self, jobs: JobStore, serving: Serving, storage: Storage) -> None:
        self.jobs = jobs
        self.serving = serving
        self.storage = storage
        self.io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="transform-io")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closing = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for name in await self._io(self.jobs.active):
            row = await self._io(self.jobs.job, name)
            if row is not None and row.status == STOPPING:
                await self._io(self.jobs.finish, name, STOPPED)
            else:
                log.info("transform job %s: resumed after a restart", name)
                self._launch(name)

    async def close(self) -> None:
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.io.shutdown(wait=True)

    # --- from the control plane's threads ------------------------------------------------------

    def submit(self, name: str) -> None:
        if self._loop is not None and not self._closing:
            self._loop.call_soon_threadsafe(self._launch, name)

    def stop(self, name: str) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel, name)

    # --- on the loop -------------------------------------------------------------------------------

    def _launch(self, name: str) -> None:
        key = name.lower()
        if key in self._tasks or self._closing:
            return
        task = asyncio.create_task(self._run(name))
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    def _cancel(self, name: str) -> None:
        task = self._tasks.get(name.lower())
        if task is not None:
            task.cancel()
        else:  # not running here (it ended as the stop came): Stopping becomes Stopped
            asyncio.create_task(self._io(self.jobs.finish, name, STOPPED))

    async def _run(self, name: str) -> None:
        row = await self._io(self.jobs.job, name)
        if row is None:
            return
        await self._io(self.jobs.started, name)
        try:
            result = await JobRun(row, self.jobs, self.serving, self.storage, self.io).run()
        except asyncio.CancelledError:
            if not self._closing:
                log.info("transform job %s: stopped", name)
                await self._io(self.jobs.finish, name, STOPPED)
            raise
        except Exception:
            log.exception("transform job %s failed unexpectedly", name)
            await self._io(
                self.jobs.finish, name, FAILED, "coldbrew failed while running this job; see the server log."
            )
            return
        if result.status == COMPLETED:
            log.info("transform job %s: completed", name)
        else:
            log.warning("transform job %s: failed: %s", name, result.reason)
        await self._io(self.jobs.finish, name, result.status, result.reason)

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    def running(self) -> list[str]:
        return sorted(self._tasks)


__all__ = ["TransformJobs"]
