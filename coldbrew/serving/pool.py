"""A variant's pool of execution environments and SageMaker Serverless admission rules.

Everything here runs on the gateway's event loop, so state changes between awaits are atomic and
no lock is needed (none is ever held across I/O).

Serverless: an environment serves one invocation at a time. An invocation takes an idle one,
otherwise cold-starts one if fewer than MaxConcurrency exist, otherwise is throttled at once.
While a cold start is under way, an environment of the same variant that becomes idle first is
handed to the waiting invocation (a hedged cold start); the new environment still joins the pool.
Provisioned: InitialInstanceCount always-on instances, each serving several invocations at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any

from coldbrew.backends.base import Backend, WorkerSpec, WorkerStartError
from coldbrew.errors import ColdbrewError, ModelError, ModelNotReadyException, ThrottlingException
from coldbrew.serving.admission import Admission, admit
from coldbrew.serving.budget import MemoryBudget
from coldbrew.serving.environment import Environment
from coldbrew.serving.keepalive import KeepAlivePolicy, make_policy

log = logging.getLogger("coldbrew.serving")


@dataclass(frozen=True)
class PoolConfig:
    endpoint: str
    variant: str
    serverless: bool
    memory_mb: int
    max_envs: int
    """Serverless: MaxConcurrency. Provisioned: InitialInstanceCount."""
    min_envs: int
    """Kept warm at all times: ProvisionedConcurrency, or every provisioned instance."""
    env_capacity: int
    """Invocations one environment serves at once (1 for serverless)."""
    idle_timeout_s: float
    weight: float = 1.0
    keepalive: str = "fixed"
    """Keep-alive policy name (``coldbrew.serving.keepalive.make_policy``)."""


@dataclass(frozen=True)
class Lease:
    """An environment held for one invocation; ``cold`` if the invocation waited for its start."""

    env: Environment
    cold: bool
    setup_ms: float


class VariantPool:
    def __init__(
        self, config: PoolConfig, spec: WorkerSpec, backend: Backend, budget: MemoryBudget | None = None
    ) -> None:
        self.config = config
        self.spec = spec
        self.backend = backend
        # Only serverless environments count against the machine's budget: MemorySizeInMB is
        # what they are sized by, while provisioned instances are always on by definition.
        self.budget = budget if config.serverless else None
        self.policy: KeepAlivePolicy = make_policy(config.keepalive, config.idle_timeout_s)
        self.idle_since: float | None = time.monotonic()
        """When the variant last finished its last in-flight invocation (None while busy)."""
        self.envs: list[Environment] = []
        self.starting = 0
        self.cold_starts = 0
        self.prewarms = 0
        self.closed = False
        self._waiters: list[asyncio.Future[Environment]] = []
        self._maintaining: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # --- admission ------------------------------------------------------------------------------

    async def acquire(self) -> Lease:
        if self.closed:
            raise ModelNotReadyException(
                f"Variant {self.config.variant} is being replaced; retry the request."
            )
        now = time.monotonic()
        if self.idle_since is not None:
            self.policy.on_arrival(now)
            self.idle_since = None
        env = self._take_ready()
        if env is not None:
            return Lease(env, cold=False, setup_ms=0.0)
        if not self.config.serverless and self.envs:
            # A provisioned instance queues requests beyond its concurrency, as a container would.
            env = min(self.envs, key=lambda e: e.in_flight)
            env.in_flight += 1
            return Lease(env, cold=False, setup_ms=0.0)
        decision = admit(
            idle=0,
            live=len(self.envs),
            starting=self.starting,
            concurrent=sum(e.in_flight for e in self.envs) + len(self._waiters),
            max_concurrency=self.config.max_envs,
        )
        if decision is Admission.THROTTLE:
            raise ThrottlingException(
                f"Endpoint {self.config.endpoint} variant {self.config.variant} is at its MaxConcurrency "
                f"of {self.config.max_envs}; retry with backoff or raise MaxConcurrency."
            )
        if decision is Admission.WAIT:
            # Every environment the limit allows exists or is starting (some for invocations a
            # hedge already served): take the first one that frees up.
            return await self._wait_for_env()
        return await self._cold_start()

    async def _wait_for_env(self) -> Lease:
        waiter: asyncio.Future[Environment] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            env = await waiter
        except asyncio.CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self.release(waiter.result())
            raise
        return Lease(env, cold=False, setup_ms=0.0)

    def _take_ready(self) -> Environment | None:
        # Most recently used first, so the rest stay idle long enough to be released.
        best: Environment | None = None
        for env in self.envs:
            if env.has_room and env.worker.is_alive() and (best is None or env.last_used > best.last_used):
                best = env
        if best is not None:
            best.in_flight += 1
        return best

    async def _cold_start(self) -> Lease:
        started = time.perf_counter()
        self.cold_starts += 1
        start = asyncio.create_task(self._start_env(busy=True))
        waiter: asyncio.Future[Environment] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait({start, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._abandon(start, waiter)
            raise
        if waiter.done() and not waiter.cancelled():
            # Hedge won: a busy environment became idle before the new one was ready.
            self._abandon(start, None)
            return Lease(waiter.result(), cold=False, setup_ms=0.0)
        self._waiters.remove(waiter)
        waiter.cancel()
        try:
            env = start.result()
        except WorkerStartError as exc:
            raise _load_failed(exc) from None
        return Lease(env, cold=True, setup_ms=(time.perf_counter() - started) * 1000)

    def _abandon(self, start: asyncio.Task[Environment], waiter: asyncio.Future[Environment] | None) -> None:
        """The invocation no longer wants the environment being started: it joins the pool idle."""
        if waiter is not None:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())
            waiter.cancel()

        def joined(task: asyncio.Task[Environment]) -> None:
            if not task.cancelled() and task.exception() is None:
                self.release(task.result())

        start.add_done_callback(joined)

    async def _start_env(self, busy: bool) -> Environment:
        memory_mb = self.config.memory_mb
        if self.budget is not None:
            self.budget.reserve(memory_mb, self)
        self.starting += 1
        try:
            worker = await self.backend.start(self.spec)
        except BaseException as exc:
            self.starting -= 1
            if self.budget is not None:
                self.budget.release(memory_mb)
            if isinstance(exc, WorkerStartError):
                log.warning(
                    "%s/%s: worker failed to start: %s", self.config.endpoint, self.config.variant, exc
                )
                if not self.envs and not self.starting:
                    # Invocations waiting for an environment would wait for ever: none will come.
                    for waiter in self._waiters:
                        if not waiter.done():
                            waiter.set_exception(_load_failed(exc))
                    self._waiters.clear()
            raise
        self.starting -= 1
        env = Environment(worker=worker, memory_mb=memory_mb, capacity=self.config.env_capacity)
        env.in_flight = 1 if busy else 0
        self.envs.append(env)
        return env

    def release(self, env: Environment) -> None:
        """An invocation is done with ``env``: hand it to a waiting one, or let it idle."""
        env.in_flight -= 1
        env.invocations += 1
        env.last_used = time.monotonic()
        if self.idle_since is None and not self._waiters and all(e.idle for e in self.envs):
            self.idle_since = env.last_used
            self.policy.on_idle(env.last_used)
        if not env.worker.is_alive() or env.stop_reason is not None or (self.closed and env.idle):
            # A replaced variant's environment that served a late invocation is stopped too.
            self.discard(env)
            return
        self._hand_to_waiters(env)

    def _hand_to_waiters(self, env: Environment) -> None:
        while env.has_room and self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                env.in_flight += 1
                waiter.set_result(env)

    def discard(self, env: Environment) -> None:
        """Drop an environment whose worker died or was stopped; the pool replaces it if it must."""
        if env in self.envs:
            self.envs.remove(env)
        if not env.closing:
            env.closing = True
            if self.budget is not None:
                self.budget.release(env.memory_mb)
            self._spawn(env.close())

    # --- scaling -------------------------------------------------------------------------------

    def reconfigure(self, config: PoolConfig) -> None:
        if (config.keepalive, config.idle_timeout_s) != (self.config.keepalive, self.config.idle_timeout_s):
            self.policy = make_policy(config.keepalive, config.idle_timeout_s)
        self.config = replace(config)

    async def ensure_minimum(self) -> None:
        """Start environments until ``min_envs`` exist (provisioned concurrency, instances)."""
        missing = self.config.min_envs - len(self.envs) - self.starting
        if missing <= 0 or self.closed:
            return
        results = await asyncio.gather(
            *(self._start_env(busy=False) for _ in range(missing)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Environment):
                result.last_used = time.monotonic()
                self._hand_to_waiters(result)
            elif isinstance(result, BaseException):
                raise result

    def evictable(self) -> list[Environment]:
        """Idle environments this variant could give up for another's cold start."""
        if not self.config.serverless:
            return []
        idle = sorted((e for e in self.envs if e.idle and not e.closing), key=lambda e: e.last_used)
        surplus = len(self.envs) - self.config.min_envs
        return idle[: max(0, surplus)]

    def reap(self, now: float) -> None:
        """Apply the keep-alive policy: release idle serverless environments (keeping ``min_envs``)
        and pre-warm one when the policy expects the next invocation soon."""
        for env in list(self.envs):
            if not env.worker.is_alive() and env.idle:
                self.discard(env)
        if not self.config.serverless or self.closed:
            return
        windows = self.policy.windows(now)
        idle_for = None if self.idle_since is None else now - self.idle_since
        if windows.prewarm_s > 0 and idle_for is not None:
            if idle_for < windows.prewarm_s or idle_for >= windows.prewarm_s + windows.keepalive_s:
                keep_for = 0.0  # outside the window the next invocation is expected in
            else:
                keep_for = float("inf")
                if not self.envs and not self.starting:
                    self._prewarm()
        else:
            keep_for = windows.prewarm_s + windows.keepalive_s
        idle = sorted((e for e in self.envs if e.idle), key=lambda e: e.last_used)
        surplus = len(self.envs) - self.config.min_envs
        for env in idle:
            if surplus <= 0:
                break
            if now - env.last_used >= keep_for:
                log.debug(
                    "%s/%s: releasing idle worker %d",
                    self.config.endpoint,
                    self.config.variant,
                    env.worker.pid,
                )
                self.discard(env)
                surplus -= 1

    def _prewarm(self) -> None:
        self.prewarms += 1

        async def start() -> None:
            try:
                env = await self._start_env(busy=False)
            except (WorkerStartError, ColdbrewError) as exc:
                log.info("%s/%s: pre-warm skipped: %s", self.config.endpoint, self.config.variant, exc)
                return
            env.last_used = time.monotonic()
            self._hand_to_waiters(env)

        self._spawn(start())

    def maintain(self) -> None:
        """Kick a background top-up to ``min_envs`` unless one is running."""
        if self._maintaining is not None and not self._maintaining.done():
            return
        if self.config.min_envs <= len(self.envs) + self.starting or self.closed:
            return

        async def top_up() -> None:
            try:
                await self.ensure_minimum()
            except (WorkerStartError, ColdbrewError) as exc:
                log.warning(
                    "%s/%s: could not keep %d environments warm: %s",
                    self.config.endpoint,
                    self.config.variant,
                    self.config.min_envs,
                    exc,
                )

        self._maintaining = asyncio.create_task(top_up())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, timeout_s: float) -> None:
        """Stop taking invocations, let in-flight ones finish, then stop every environment."""
        self.closed = True
        for waiter in self._waiters:
            waiter.cancel()
        self._waiters.clear()
        deadline = time.monotonic() + timeout_s
        while any(not e.idle for e in self.envs) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._maintaining is not None:
            self._maintaining.cancel()
        for env in list(self.envs):
            self.discard(env)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _load_failed(exc: WorkerStartError) -> ModelError:
    return ModelError(
        f"The model failed to load on a cold start: {exc}", OriginalStatusCode=500, OriginalMessage=str(exc)
    )
