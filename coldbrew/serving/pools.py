"""The live side of the scaling core: carries out its actions with real workers on a real clock.

:class:`Pools` owns the machine's :class:`~coldbrew.scaling.core.ScalingCore`. It tells the core
what happens (an invocation arrives or finishes, a worker is ready, fails or dies, time passes)
and does what the core answers: start a worker through the backend, stop one, hand an
environment to a waiting invocation, reject one. It decides nothing itself.

Everything runs on the gateway's event loop, so each event is handled atomically and no lock is
needed (none is ever held across I/O). The clock is injectable and the timer optional, so tests
can drive the same code under a virtual clock with a fake backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from coldbrew.backends.base import Backend, RoomWanted, WorkerSpec, WorkerStartError
from coldbrew.errors import ModelError, ModelNotReadyException, ThrottlingException
from coldbrew.logs.collector import EnvironmentLog, LogCollector
from coldbrew.scaling.core import ScalingCore
from coldbrew.scaling.messages import (
    Action,
    Arrival,
    Budget,
    Close,
    Deploy,
    Drained,
    Event,
    Finished,
    Forget,
    Helpers,
    Lost,
    Place,
    PoolConfig,
    Ready,
    Reclaim,
    Reconfigure,
    Refused,
    Reject,
    RejectKind,
    Retire,
    Route,
    Start,
    StartFailed,
    Stop,
    StopReason,
    Tick,
    Warmed,
    WarmFailed,
    Withdrawn,
)
from coldbrew.serving.environment import Environment
from coldbrew.serving.errors import DeployError

log = logging.getLogger("coldbrew.serving")

CHECK_PATIENCE_S = 120.0
"""How long a load check waits for room in the memory budget before the deploy fails."""

_ROUTE_RETRIES = 3
"""A request routed to a worker found dead is admitted again, at most this many times."""


@dataclass(frozen=True)
class Lease:
    """An environment held for one invocation; ``cold`` if the invocation waited for its start."""

    env: Environment
    request: int
    cold: bool
    setup_ms: float
    arrived: float = 0.0
    """When the invocation asked for it, by ``time.monotonic()`` whatever the pools' clock (the
    environment's start trace is on that clock)."""


class Pools:
    def __init__(
        self,
        backend: Backend,
        memory_budget_mb: int,
        clock: Callable[[], float] = time.monotonic,
        timer: bool = True,
        logs: LogCollector | None = None,
        max_starting: int | None = None,
        cpu_slots: int | None = None,
    ) -> None:
        self.core = ScalingCore(memory_budget_mb, max_starting, cpu_slots)
        self.backend = backend
        self.clock = clock
        self.logs = logs
        """Where each environment's output and lifecycle go (its log stream); None: nowhere but
        the server's own log."""
        self._env_logs: dict[int, EnvironmentLog] = {}
        self._names: dict[int, tuple[str, str]] = {}
        """Pool -> (endpoint, variant), for its environments' log streams; kept as ``_labels``."""
        self.specs: dict[int, WorkerSpec] = {}
        self._runtimes: dict[str, int] = {}
        """How many pools' specs name each runtime (``runtimes``), kept as ``specs`` changes."""
        self.environments: dict[int, Environment] = {}
        self._requests = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Route | Reject]] = {}
        self._warming: dict[int, asyncio.Future[str | None]] = {}
        self._drained: dict[int, asyncio.Future[None]] = {}
        self._refused: dict[int, str] = {}
        """Pool -> why the Reconfigure being handled was refused (read back by ``reconfigure``)."""
        self._starting: set[int] = set()
        self._held_since: dict[int, tuple[int, int, float]] = {}
        """Environment -> (pool, memory, since when) from the start asked for until it is gone."""
        self.held_mb_s: dict[int, float] = {}
        """Per pool: memory-seconds of environments that are gone (see ``held_megabyte_seconds``)."""
        self._stop_when_ready: set[int] = set()
        self._labels: dict[int, str] = {}
        """Pool -> "endpoint/variant" for the log, kept until the pool is drained (the core forgets a
        closed pool before its last Stop actions are carried out)."""
        self._emptied: set[int] = set()
        """Pools that lost an environment in the event being handled: maybe scaled to zero."""
        self._background: set[asyncio.Task[None]] = set()
        self._use_timer = timer
        self._timer: asyncio.Task[None] | None = None
        self._wake_at = math.inf
        self._wake = asyncio.Event()

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._use_timer and self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(self._run_timer())

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    def runtimes(self) -> set[str]:
        """The runtimes some pool's workers use (without a scan of every pool's spec: the
        housekeeping asks four times a second, and there may be 10,000 pools)."""
        return set(self._runtimes)

    def config(self, pool: int) -> PoolConfig:
        return self.core.pools[pool].config

    # --- deployment ----------------------------------------------------------------------------

    def add(self, config: PoolConfig, spec: WorkerSpec) -> int:
        """Register a pool (ValueError for an unknown keep-alive policy); it runs nothing yet."""
        pool = self.core.add_pool(config)
        self.specs[pool] = spec
        self._runtimes[spec.runtime] = self._runtimes.get(spec.runtime, 0) + 1
        self._labels[pool] = f"{config.endpoint}/{config.variant}"
        self._names[pool] = (config.endpoint, config.variant)
        return pool

    async def deploy(self, pools: list[int], check: bool) -> None:
        """Start each pool's minimum environments (and, with ``check``, prove that scale-to-zero
        variants load); raise DeployError naming the variant that could not."""
        loop = asyncio.get_running_loop()
        futures = {pool: loop.create_future() for pool in pools}
        self._warming.update(futures)
        for pool in pools:
            self._handle(Deploy(pool, check))
        try:
            for pool, future in futures.items():
                variant = self.config(pool).variant
                try:
                    reason = await asyncio.wait_for(asyncio.shield(future), CHECK_PATIENCE_S)
                except TimeoutError:
                    reason = "no room in the memory budget to check that the model loads"
                if reason is not None:
                    raise DeployError(f"Variant {variant}: {reason}")
        finally:
            for pool in pools:
                self._warming.pop(pool, None)

    def reconfigure(self, pool: int, config: PoolConfig) -> str | None:
        """Apply new weights and capacities; why not, if the machine cannot hold them (the pool
        then keeps its config)."""
        self._refused.pop(pool, None)
        self._handle(Reconfigure(pool, config))
        return self._refused.pop(pool, None)

    async def drain(self, pool: int, timeout_s: float) -> None:
        """Take no more invocations, let in-flight ones finish (up to ``timeout_s``), stop every
        environment and forget the pool."""
        if pool not in self.core.pools:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drained[pool] = future
        self._handle(Close(pool))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            self._handle(Forget(pool))
        finally:
            self._drained.pop(pool, None)
            spec = self.specs.pop(pool, None)
            if spec is not None:
                left = self._runtimes.pop(spec.runtime, 1) - 1
                if left:
                    self._runtimes[spec.runtime] = left
            self._labels.pop(pool, None)
            self._names.pop(pool, None)

    # --- invocations ---------------------------------------------------------------------------

    async def acquire(self, pool: int) -> Lease:
        """An environment for one invocation; ThrottlingException, ModelError (the model failed to
        load on this cold start) or ModelNotReadyException (the variant is being replaced)."""
        arrived, began = self.clock(), time.monotonic()
        for _ in range(_ROUTE_RETRIES):
            request = next(self._requests)
            future: asyncio.Future[Route | Reject] = asyncio.get_running_loop().create_future()
            self._pending[request] = future
            self._handle(Arrival(pool, request))
            if not future.done():
                try:
                    await future
                except asyncio.CancelledError:
                    self._abandon(pool, request, future)
                    raise
            decision = future.result()
            if isinstance(decision, Reject):
                raise _rejection(decision)
            env = self.environments.get(decision.env)
            try:
                usable = env is not None and env.worker.is_alive() and not env.retiring()
            except BaseException:
                # The environment routed to this request is given back whatever went wrong in
                # looking at it: a lease nobody holds would keep its pool from ever draining.
                self._handle(Finished(decision.env, request))
                raise
            if usable:
                assert env is not None
                setup_ms = (self.clock() - arrived) * 1000 if decision.cold else 0.0
                return Lease(env, request, decision.cold, setup_ms, began)
            # Not one to hand the request to: admit it again, elsewhere.
            if env is None:
                self._handle(Finished(decision.env, request))
            elif env.worker.is_alive():
                # Exiting with its zygote, and so are its siblings: all of them are retired now
                # (what runs on them finishes there), not one per admission.
                try:
                    self.reap_dead()
                finally:
                    self._handle(Finished(env.id, request))
            else:
                self.lost(env, readmitted=True)  # it died while idle
        raise ModelError(
            "The model's workers keep exiting before they can serve; see the endpoint's logs.",
            OriginalStatusCode=500,
            OriginalMessage="worker exited",
        )

    def _abandon(self, pool: int, request: int, future: asyncio.Future[Route | Reject]) -> None:
        """The invocation was cancelled while it waited: withdraw it, or give back what it got."""
        self._pending.pop(request, None)
        if not future.done() or future.cancelled():
            self._handle(Withdrawn(pool, request))
            return
        decision = future.result()
        if isinstance(decision, Route):
            self._handle(Finished(decision.env, request))

    def release(self, lease: Lease, cores: float | None = None) -> None:
        """The invocation is over (``cores``: what it kept busy, if its worker said); an environment
        coldbrew had to stop is reported lost."""
        env = lease.env
        env.served += 1
        if env.stop_reason is not None or not env.worker.is_alive():
            self.lost(env)
            return
        self._handle(Finished(env.id, lease.request, cores))

    def lost(self, env: Environment, readmitted: bool = False) -> None:
        """The worker died or coldbrew stopped it (memory, timeout): forget it and stop it.
        ``readmitted``: the invocation routed to it is admitted again at once, so its variant
        going without environments for that moment is no scale-to-zero."""
        if self.environments.pop(env.id, None) is not None:
            self._log_release(env.id, env.pool, env.stop_reason or "its worker exited", env.worker.pid)
            if not readmitted:
                self._emptied.add(env.pool)
            self._spawn(env.close())
            self._handle(Lost(env.id))

    # --- periodic checks -----------------------------------------------------------------------

    def retire(self, env: Environment) -> None:
        """The worker is exiting on its own: route nothing more to it, stop it once idle."""
        if env.id in self.environments:
            self._handle(Retire(env.id))

    def reap_dead(self) -> None:
        """Report workers that exited while idle (a crash between invocations), and retire those
        that are exiting (their zygote died), so that none is handed another invocation."""
        for env in list(self.environments.values()):
            state = self.core.envs.get(env.id)
            if state is None:
                continue
            if state.in_flight == 0 and not env.worker.is_alive():
                self.lost(env)
            elif not state.retiring and env.retiring():
                self.retire(env)

    def helpers(self, mb: int) -> None:
        """The backend's helpers (zygotes) hold ``mb`` now: the budget's room is less by that."""
        if mb != self.core.helpers_mb:
            self._handle(Helpers(mb))

    def budget(self, mb: int) -> None:
        """The memory budget is ``mb`` now (a cluster's nodes joined or left)."""
        if mb != self.core.memory_budget_mb:
            self._handle(Budget(mb))

    def reclaim(self, wanted: RoomWanted) -> None:
        """A start waits in the backend for room on one node: the core may release idle
        environments on one of the nodes it could go to."""
        places = tuple(Place(node.environments, node.short_mb) for node in wanted.nodes)
        self._handle(Reclaim(wanted.environment, places))

    def tick(self) -> None:
        """Let the core apply what time has made due (the timer calls this; tests may too)."""
        self._handle(Tick())
        self._wake_at = self.core.next_wakeup()

    async def _run_timer(self) -> None:
        self._wake_at = self.core.next_wakeup()
        while True:
            self._wake.clear()
            delay = self._wake_at - self.clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(delay, 3600.0))
                continue
            try:
                self.tick()
            except Exception:
                log.exception("scaling tick failed")
                self._wake_at = self.clock() + 1.0

    # --- carrying out actions ------------------------------------------------------------------

    def held_megabyte_seconds(self, pool: int) -> float:
        """Memory-seconds ``pool``'s environments have held, from the moment each start was asked
        for to the moment it was gone (what the simulator's held figure models)."""
        now = self.clock()
        live = sum(mb * (now - since) for p, mb, since in self._held_since.values() if p == pool)
        return self.held_mb_s.get(pool, 0.0) + live

    def _gone(self, env: int) -> None:
        held = self._held_since.pop(env, None)
        if held is not None:
            pool, mb, since = held
            self.held_mb_s[pool] = self.held_mb_s.get(pool, 0.0) + mb * (self.clock() - since)

    def _handle(self, event: Event) -> None:
        if isinstance(event, Lost | StartFailed):
            self._gone(event.env)
        for action in self.core.handle(event, self.clock()):
            self._do(action)
        if self._emptied:
            self._log_scaled_to_zero()
        hint = self.core.take_wakeup_hint()
        if hint < self._wake_at:
            self._wake_at = hint
            self._wake.set()

    def _do(self, action: Action) -> None:
        if isinstance(action, Route | Reject):
            future = self._pending.pop(action.request, None)
            if future is not None and not future.done():
                future.set_result(action)
            elif isinstance(action, Route):
                # Its invocation is gone (cancelled as it was handed over): give the environment back.
                self._handle(Finished(action.env, action.request))
        elif isinstance(action, Start):
            self._held_since[action.env] = (
                action.pool,
                self.core.pools[action.pool].config.memory_mb,
                self.clock(),
            )
            self._starting.add(action.env)
            self._spawn(self._start(action))
        elif isinstance(action, Stop):
            self._stop(action)
        elif isinstance(action, Refused):
            self._refused[action.pool] = action.reason
        elif isinstance(action, Warmed | WarmFailed):
            warming = self._warming.get(action.pool)
            if warming is not None and not warming.done():
                warming.set_result(action.reason if isinstance(action, WarmFailed) else None)
        elif isinstance(action, Drained):
            drained = self._drained.get(action.pool)
            if drained is not None and not drained.done():
                drained.set_result(None)

    def _stop(self, action: Stop) -> None:
        held = self._held_since.get(action.env)
        env = self.environments.pop(action.env, None)
        pool = env.pool if env is not None else held[0] if held is not None else None
        if pool is not None:
            pid = env.worker.pid if env is not None else None
            self._log_release(action.env, pool, self._stop_why(pool, action.reason), pid)
            self._emptied.add(pool)
        self._gone(action.env)
        if env is not None and action.reason is StopReason.EVICTED and env.stop_reason is None:
            # What an invocation still on it hears (only a transform job's are evicted while busy).
            env.stop_reason = "The environment was stopped to make room in the memory budget for an endpoint."
        if env is None:
            if action.env in self._starting:
                self._stop_when_ready.add(action.env)
            return
        self._spawn(env.close())

    def _stop_why(self, pool: int, reason: StopReason) -> str:
        if reason is StopReason.RETIRED:
            return "the zygote it was forked from exited, and so does its worker"
        if reason is StopReason.EVICTED:
            return "evicted to make room in the memory budget for another variant's cold start"
        if reason is StopReason.CLOSED:
            return "its variant was drained (replaced, deleted or the server stopping)"
        state = self.core.pools.get(pool)
        if state is not None and not state.config.serverless:
            return "beyond the variant's instance count"
        return "idle past its keep-alive"

    def _log_release(self, env: int, pool: int, why: str, pid: int | None) -> None:
        held = self._held_since.get(env)
        age = f" after {self.clock() - held[2]:.1f} s" if held is not None else ""
        worker = f" (worker {pid})" if pid is not None else " (still starting)"
        log.info("%s: environment %d%s released%s: %s", self._label(pool), env, worker, age, why)
        env_log = self._env_logs.pop(env, None)
        if env_log is not None:
            env_log.event(f"environment released{age}: {why}{worker}")

    def _log_scaled_to_zero(self) -> None:
        for pool in sorted(self._emptied):
            state = self.core.pools.get(pool)
            # A closed pool is being drained: its release lines say so, and it is not scaling.
            if state is None or state.closed or state.envs:
                continue
            if state.idle_since is None:
                log.info("%s: scaled to zero, not invoked since it was deployed", self._label(pool))
            else:
                idle_s = self.clock() - state.idle_since
                idle = f"{idle_s:.1f}" if idle_s < 10 else f"{idle_s:.0f}"  # idle timeouts may be < 1 s
                log.info("%s: scaled to zero after %s s idle", self._label(pool), idle)
        self._emptied.clear()

    def _label(self, pool: int) -> str:
        return self._labels.get(pool, f"pool {pool}")

    def _open_log(self, env: int, pool: int, spec: WorkerSpec) -> tuple[WorkerSpec, EnvironmentLog | None]:
        """The environment's log stream: its worker's stdout and stderr go to it."""
        names = self._names.get(pool)
        if self.logs is None or names is None:
            return spec, None
        env_log = self._env_logs[env] = self.logs.open(*names)
        return replace(spec, output_fd=env_log.output_fd), env_log

    def _log_failure(self, env: int, env_log: EnvironmentLog | None, why: str) -> None:
        self._env_logs.pop(env, None)
        if env_log is not None:
            env_log.event(f"environment failed to start: {why}")

    async def _start(self, action: Start) -> None:
        spec = self.specs.get(action.pool)
        env_log: EnvironmentLog | None = None
        try:
            if spec is None:
                raise WorkerStartError("the variant was removed before its worker started")
            spec, env_log = self._open_log(action.env, action.pool, replace(spec, environment=action.env))
            try:
                worker = await self.backend.start(spec)
            finally:
                if env_log is not None:
                    env_log.handed_over()
        except WorkerStartError as exc:
            self._starting.discard(action.env)
            self._stop_when_ready.discard(action.env)
            log.warning("%s: worker failed to start: %s", self._label(action.pool), exc)
            self._log_failure(action.env, env_log, str(exc))
            self._handle(StartFailed(action.env, str(exc)))
            return
        except Exception as exc:
            self._starting.discard(action.env)
            self._stop_when_ready.discard(action.env)
            if isinstance(exc, asyncio.CancelledError):
                self._env_logs.pop(action.env, None)
                raise
            log.exception("%s: starting a worker failed unexpectedly", self._label(action.pool))
            why = "internal error starting the worker; see the coldbrew log"
            self._log_failure(action.env, env_log, why)
            self._handle(StartFailed(action.env, why))
            return
        self._starting.discard(action.env)
        if action.env in self._stop_when_ready:
            self._stop_when_ready.discard(action.env)
            self._env_logs.pop(action.env, None)  # its release was written when it was stopped
            await worker.stop()
            return
        env = Environment(action.env, action.pool, worker, spec.memory_mb)
        self.environments[env.id] = env
        held = self._held_since.get(action.env)
        if held is not None and action.pool in self.core.pools:
            config = self.core.pools[action.pool].config
            started_ms = (self.clock() - held[2]) * 1000
            log.info(
                "%s/%s: environment %d started in %.1f ms (%s, worker %d)",
                config.endpoint,
                config.variant,
                action.env,
                started_ms,
                action.purpose.value,
                worker.pid,
            )
            env_log = self._env_logs.get(action.env)
            if env_log is not None:
                env_log.event(
                    f"environment started in {started_ms:.1f} ms ({action.purpose.value}, worker "
                    f"{worker.pid}, {spec.memory_mb} MB)"
                )
        self._handle(Ready(env.id))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _rejection(reject: Reject) -> Exception:
    if reject.kind is RejectKind.THROTTLED:
        return ThrottlingException(reject.message)
    if reject.kind is RejectKind.CLOSED:
        return ModelNotReadyException(reject.message)
    return ModelError(reject.message, OriginalStatusCode=500, OriginalMessage=reject.message)
