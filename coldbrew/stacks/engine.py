"""The stack operations that run now: one asyncio task per stack on the gateway's event loop,
started when an operation is accepted and, at start-up, for every stack a stopped server left
in progress (``execution.StackRun`` rolls back or finishes it).

The stack's steps call the control plane's own operations (``ControlPlaneApi``), in a thread
pool of their own: never HTTP to the server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from coldbrew.control.service import ControlPlane, RequestContext
from coldbrew.control.validation import operation_model, validate_input
from coldbrew.errors import ColdbrewError
from coldbrew.stacks.execution import StackRun
from coldbrew.stacks.resources import ResourceFailure
from coldbrew.stacks.store import StackStore

log = logging.getLogger("coldbrew.stacks")

T = TypeVar("T")
BUG = "coldbrew failed while running this stack operation; see the server log"


class ControlPlaneApi:
    """SageMaker's operations as the control plane runs them, validated as the gateway validates
    a client's request."""

    def __init__(self, control: ControlPlane, context: RequestContext) -> None:
        self.control = control
        self.context = context

    def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        handler = self.control.operations.get(operation)
        model = operation_model(operation)
        assert handler is not None and model is not None, operation
        try:
            validate_input(model, request)
            return handler(self.context, request)
        except ColdbrewError as error:
            raise ResourceFailure(
                error.message, not_found=error.message.startswith("Could not find")
            ) from None


class StackEngine:
    def __init__(
        self,
        stacks: StackStore,
        control: ControlPlane,
        account: str,
        poll_interval_s: float = 0.2,
    ) -> None:
        self.stacks = stacks
        self.control = control
        self.account = account
        self.poll_interval_s = poll_interval_s
        self.io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="stacks")
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closing = False

    async def start(self) -> None:
        for record in await self._io(self.stacks.running):
            log.info("stack %s was %s when coldbrew stopped: taking it up", record.name, record.status)
            self.launch(record.stack_id, recovering=True)

    async def close(self) -> None:
        """Stop the running operations; each is taken up at the next start where it stopped."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.io.shutdown(wait=True)

    def launch(self, stack_id: str, recovering: bool = False) -> None:
        """Run the operation the stack's status says is under way (on the loop)."""
        if stack_id in self._tasks or self._closing:
            return
        task = asyncio.create_task(self._run(stack_id, recovering))
        self._tasks[stack_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(stack_id, None))

    async def settle(self, stack_id: str, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the stack's operation to end (it goes on if it does not)."""
        task = self._tasks.get(stack_id)
        if task is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout_s)

    def running(self) -> list[str]:
        return sorted(self._tasks)

    async def _run(self, stack_id: str, recovering: bool) -> None:
        record = await self._io(self.stacks.find, stack_id)
        if record is None:
            return
        api = ControlPlaneApi(self.control, RequestContext(record.region, self.account))
        run = StackRun(stack_id, self.stacks, api, self.account, self._io, self.poll_interval_s)
        try:
            await run.run(recovering)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stack %s: its operation failed unexpectedly", record.name)
            try:  # fail it as an interrupted one: a create or update rolls back
                await run.run(True, BUG)
            except Exception:
                # The stack stays in progress and is taken up again at the next start.
                log.exception("stack %s: it could not be rolled back either", record.name)

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)


__all__ = ["ControlPlaneApi", "StackEngine"]
