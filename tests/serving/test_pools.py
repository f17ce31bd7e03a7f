"""The live pools with a fake backend and a virtual clock: no processes, no sleeping.

Each test runs its own event loop (``asyncio.run``). The fake backend's starts complete only when
the test says so, the clock is a number the test moves, and ``timer=False`` leaves the ticks to
the test (``pools.tick()``), so every path below runs in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from coldbrew.backends.base import WorkerSpec, WorkerStartError
from coldbrew.errors import ModelError, ModelNotReadyException, ThrottlingException
from coldbrew.scaling.messages import PoolConfig, Purpose
from coldbrew.serving.errors import DeployError
from coldbrew.serving.pools import Lease, Pools
from tests.scaling.configs import serverless

# --- fakes ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeWorker:
    _pids = itertools.count(1000)

    def __init__(self, memory_mb: int) -> None:
        self.pid = next(self._pids)
        self.address = f"unix:/nonexistent/worker-{self.pid}.sock"  # connected to lazily, never here
        self.setup_ms = 0.0
        self.memory_mb = memory_mb
        self.memory_enforced = False
        self.alive = True
        self.stopped = False
        self.orphaned = False
        """As a worker of a zygote that died: exiting on its own (``retiring``)."""

    def rss_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024 // 2

    def oom_killed(self) -> bool:
        return False

    def is_alive(self) -> bool:
        return self.alive

    def retiring(self) -> bool:
        return self.orphaned

    async def stop(self, grace_s: float = 2.0) -> None:
        self.alive = False
        self.stopped = True


def _future() -> asyncio.Future[FakeWorker]:
    return asyncio.get_running_loop().create_future()


@dataclass
class PendingStart:
    spec: WorkerSpec
    done: asyncio.Future[FakeWorker] = field(default_factory=_future)
    worker: FakeWorker | None = None


class FakeBackend:
    """``start`` returns when the test calls ``finish(i)`` (or raises after ``fail(i, ...)``)."""

    def __init__(self) -> None:
        self.starts: list[PendingStart] = []

    async def start(self, spec: WorkerSpec) -> FakeWorker:
        pending = PendingStart(spec)
        self.starts.append(pending)
        return await pending.done

    def finish(self, index: int) -> FakeWorker:
        pending = self.starts[index]
        pending.worker = FakeWorker(pending.spec.memory_mb)
        pending.done.set_result(pending.worker)
        return pending.worker

    def fail(self, index: int, message: str) -> None:
        self.starts[index].done.set_exception(WorkerStartError(message))

    def maintain(self) -> None:
        return None

    async def close(self) -> None:
        return None


def config(variant: str = "a", **fields: Any) -> PoolConfig:
    return serverless(variant, **{"max_concurrency": 2, **fields})


def spec(memory_mb: int = 1024) -> WorkerSpec:
    return WorkerSpec(model_dir="/nonexistent/model", memory_mb=memory_mb)


async def settle() -> None:
    """Let every task that can run do so (the starts the pools spawn, the stops, the waiters)."""
    for _ in range(10):
        await asyncio.sleep(0)


class Harness:
    def __init__(self, memory_budget_mb: int = 8192) -> None:
        self.clock = Clock()
        self.backend = FakeBackend()
        self.pools = Pools(self.backend, memory_budget_mb, clock=self.clock, timer=False)

    async def add(self, pool_config: PoolConfig) -> int:
        pool = self.pools.add(pool_config, spec(pool_config.memory_mb))
        await self.pools.deploy([pool], check=False)
        return pool

    def acquire(self, pool: int) -> asyncio.Task[Lease]:
        return asyncio.ensure_future(self.pools.acquire(pool))

    async def cold(self, pool: int, start_s: float = 1.0) -> Lease:
        """An acquire that starts a worker, which is ready ``start_s`` later."""
        task = self.acquire(pool)
        await settle()
        self.clock.t += start_s
        self.backend.finish(len(self.backend.starts) - 1)
        lease = await task
        assert lease.cold
        return lease


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


# --- tests --------------------------------------------------------------------------------------


def test_cold_then_warm() -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config())
        task = h.acquire(pool)
        await settle()
        assert len(h.backend.starts) == 1
        assert h.backend.starts[0].spec.memory_mb == 1024
        assert not task.done()
        h.clock.t = 2.5
        worker = h.backend.finish(0)
        lease = await task
        assert lease.cold
        assert lease.setup_ms == pytest.approx(2500.0)
        assert lease.env.worker is worker
        h.clock.t = 3.0
        h.pools.release(lease)
        again = await h.pools.acquire(pool)
        assert not again.cold and again.setup_ms == 0.0
        assert again.env is lease.env
        assert len(h.backend.starts) == 1
        h.pools.release(again)
        await h.pools.close()

    run(main())


def test_hedged_cold_start() -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config(max_concurrency=2))
        first, second = h.acquire(pool), h.acquire(pool)
        await settle()
        assert len(h.backend.starts) == 2
        h.clock.t = 1.0
        h.backend.finish(0)
        lease1 = await first
        assert lease1.cold
        # The first environment frees up before the second is ready: it serves the second request.
        h.clock.t = 1.5
        h.pools.release(lease1)
        lease2 = await second
        assert not lease2.cold and lease2.setup_ms == 0.0
        assert lease2.env is lease1.env
        assert h.pools.core.pools[pool].stats.hedged == 1
        # The second start still joins the pool, idle.
        h.clock.t = 2.0
        late = h.backend.finish(1)
        await settle()
        assert len(h.pools.environments) == 2
        (joined,) = [e for e in h.pools.environments.values() if e.worker is late]
        assert h.pools.core.envs[joined.id].ready
        assert h.pools.core.envs[joined.id].in_flight == 0
        h.pools.release(lease2)
        await h.pools.close()

    run(main())


def test_throttled_past_max_concurrency() -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config(max_concurrency=1))
        waiting = h.acquire(pool)
        await settle()
        with pytest.raises(ThrottlingException, match="MaxConcurrency of 1"):
            await h.pools.acquire(pool)
        h.backend.finish(0)
        h.pools.release(await waiting)
        await h.pools.close()

    run(main())


def test_failed_start_raises_model_error() -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config())
        task = h.acquire(pool)
        await settle()
        h.backend.fail(0, "the weights went missing")
        with pytest.raises(ModelError, match="the weights went missing"):
            await task
        assert h.pools.core.used_mb == 0
        assert h.pools.environments == {}
        await h.pools.close()

    run(main())


def test_prewarm_after_the_adaptive_policy_learns() -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config(keepalive="adaptive", idle_timeout_s=300.0))
        # Every 600 s, one invocation of 1 s after a 2 s cold start: released by the 300 s
        # fallback each time, until ten idle times of 597 s are learned (at the 11th arrival).
        for k in range(11):
            h.clock.t = 600.0 * k
            lease = await h.cold(pool, start_s=2.0)
            h.clock.t += 1.0
            h.pools.release(lease)
            await settle()
            if k < 10:
                assert h.pools.core.next_wakeup() == pytest.approx(h.clock.t + 300.0)
                h.clock.t = h.pools.core.next_wakeup()
                h.pools.tick()
                await settle()
            assert lease.env.worker.stopped  # after the last: released as the pool went idle
        assert len(h.backend.starts) == 11
        # Pre-warm 531 s after going idle (at 6003 s), with no request waiting.
        prewarm_at = h.pools.core.next_wakeup()
        assert prewarm_at == pytest.approx(6003.0 + 531.0)
        h.clock.t = prewarm_at - 1.0
        h.pools.tick()
        await settle()
        assert len(h.backend.starts) == 11
        h.clock.t = prewarm_at
        h.pools.tick()
        await settle()
        assert len(h.backend.starts) == 12
        assert h.pools.core.pools[pool].waiters == {}
        (state,) = h.pools.core.envs.values()
        assert state.purpose is Purpose.PREWARM
        h.clock.t += 2.0
        prewarmed = h.backend.finish(11)
        await settle()
        # The next invocation, at 6600 s, is warm.
        h.clock.t = 6600.0
        lease = await h.pools.acquire(pool)
        assert not lease.cold
        assert lease.env.worker is prewarmed
        assert len(h.backend.starts) == 12
        h.pools.release(lease)
        await h.pools.close()

    run(main())


def test_eviction_across_pools_under_a_small_budget() -> None:
    async def main() -> None:
        h = Harness(memory_budget_mb=2048)
        a = await h.add(config("a", memory_mb=1024, max_concurrency=2))
        b = await h.add(config("b", memory_mb=2048, max_concurrency=1))
        a1 = await h.cold(a)
        a2 = await h.cold(a)
        h.pools.release(a1)
        h.pools.release(a2)
        assert h.pools.core.used_mb == 2048
        # b's cold start needs the whole budget: both of a's idle workers are stopped for it.
        lease = await h.cold(b)
        await settle()
        assert a1.env.worker.stopped and a2.env.worker.stopped
        assert h.pools.core.evictions == 2
        assert h.pools.core.pools[a].stats.evicted == 2
        assert set(h.pools.environments) == {lease.env.id}
        h.pools.release(lease)
        # And back: a's cold start evicts b's idle worker.
        again = await h.cold(a)
        await settle()
        assert lease.env.worker.stopped
        h.pools.release(again)
        await h.pools.close()

    run(main())


def test_cancelled_acquire_withdraws_and_the_worker_joins_idle() -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config())
        task = h.acquire(pool)
        await settle()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert h.pools.core.pools[pool].waiters == {}
        h.clock.t = 1.0
        worker = h.backend.finish(0)
        await settle()
        (env,) = h.pools.environments.values()
        assert env.worker is worker
        assert h.pools.core.envs[env.id].ready and h.pools.core.envs[env.id].in_flight == 0
        lease = await h.pools.acquire(pool)
        assert not lease.cold and lease.env is env
        h.pools.release(lease)
        await h.pools.close()

    run(main())


def test_worker_dead_while_idle_is_replaced_on_acquire() -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config())
        lease = await h.cold(pool)
        h.pools.release(lease)
        lease.env.worker.alive = False  # crashed between invocations
        task = h.acquire(pool)
        await settle()
        assert len(h.backend.starts) == 2
        h.backend.finish(1)
        fresh = await task
        assert fresh.cold and fresh.env is not lease.env
        assert lease.env.worker.stopped
        h.pools.release(fresh)
        await h.pools.close()

    run(main())


def test_deploy_fails_when_a_minimum_environment_fails_to_start() -> None:
    async def main() -> None:
        h = Harness()
        pool = h.pools.add(config(min_environments=1), spec())
        deploying = asyncio.ensure_future(h.pools.deploy([pool], check=False))
        await settle()
        assert not deploying.done()
        h.backend.fail(0, "No module named 'xgboost'")
        with pytest.raises(DeployError, match="Variant a: No module named 'xgboost'"):
            await deploying
        await h.pools.close()

    run(main())


def test_deploy_with_a_load_check_keeps_its_worker_warm() -> None:
    async def main() -> None:
        h = Harness()
        pool = h.pools.add(config(), spec())
        deploying = asyncio.ensure_future(h.pools.deploy([pool], check=True))
        await settle()
        assert not deploying.done()
        checked = h.backend.finish(0)
        await deploying
        lease = await h.pools.acquire(pool)
        assert not lease.cold and lease.env.worker is checked
        h.pools.release(lease)
        await h.pools.close()

    run(main())


def test_drain_stops_every_worker() -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config(max_concurrency=3))
        idle = await h.cold(pool)
        busy = await h.cold(pool)
        given_up = h.acquire(pool)  # a third start, whose invocation is cancelled
        await settle()
        given_up.cancel()
        await settle()
        h.pools.release(idle)
        draining = asyncio.ensure_future(h.pools.drain(pool, timeout_s=5.0))
        await settle()
        # The idle worker is stopped at once, the busy one once its invocation is over.
        assert idle.env.worker.stopped
        assert not busy.env.worker.stopped
        h.pools.release(busy)
        await settle()
        assert busy.env.worker.stopped
        # The start under way is stopped once it is ready; then the pool is gone.
        assert not draining.done()
        late = h.backend.finish(2)
        await draining
        await h.pools.close()
        assert late.stopped
        assert h.pools.environments == {}
        assert pool not in h.pools.core.pools
        assert h.pools.core.used_mb == 0

    run(main())


def test_drain_turns_away_waiting_invocations() -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config())
        waiting = h.acquire(pool)
        await settle()
        draining = asyncio.ensure_future(h.pools.drain(pool, timeout_s=5.0))
        with pytest.raises(ModelNotReadyException, match="Variant a is being replaced"):
            await waiting
        h.backend.finish(0)
        await draining
        await h.pools.close()
        assert h.backend.starts[0].worker is not None and h.backend.starts[0].worker.stopped

    run(main())


def test_drain_out_of_time_stops_busy_workers_too() -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config())
        busy = await h.cold(pool)
        await h.pools.drain(pool, timeout_s=0.0)
        await h.pools.close()
        assert busy.env.worker.stopped
        assert pool not in h.pools.core.pools
        h.pools.release(busy)  # the invocation ends after all: nothing left to do

    run(main())


def test_a_retiring_idle_worker_is_stopped_and_never_handed_the_invocation() -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config())
        first = await h.cold(pool)
        h.pools.release(first)
        first.env.worker.orphaned = True  # its zygote died; housekeeping has not run yet
        task = h.acquire(pool)
        await settle()
        assert first.env.worker.stopped
        assert len(h.backend.starts) == 2
        h.backend.finish(1)
        second = await task
        assert second.cold and second.env is not first.env
        h.pools.release(second)
        await h.pools.close()

    run(main())


def test_an_error_while_looking_at_the_routed_worker_gives_its_environment_back() -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config())
        first = await h.cold(pool)
        h.pools.release(first)
        worker = first.env.worker

        def broken() -> bool:
            raise RuntimeError("concurrent poll() invocation")

        worker.is_alive = broken  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="concurrent poll"):
            await h.acquire(pool)
        del worker.is_alive  # the instance's override: the class's method answers again
        # The environment is free again: the next invocation gets it warm, no cold start (a lease
        # kept would leave this one waiting for a start that never comes).
        again = await asyncio.wait_for(h.acquire(pool), 10)
        assert again.env is first.env and not again.cold
        assert len(h.backend.starts) == 1
        h.pools.release(again)
        await h.pools.close()

    run(main())


def test_a_retiring_busy_worker_finishes_its_invocation_then_stops() -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config(max_concurrency=2))
        busy = await h.cold(pool)
        busy.env.worker.orphaned = True
        h.pools.reap_dead()
        assert not busy.env.worker.stopped
        other = await h.cold(pool)  # a new worker, not the retiring one
        assert other.env is not busy.env
        h.pools.release(busy)
        await settle()
        assert busy.env.worker.stopped
        h.pools.release(other)
        again = await h.pools.acquire(pool)
        assert again.env is other.env and not again.cold
        h.pools.release(again)
        await h.pools.drain(pool, timeout_s=5.0)
        await h.pools.close()
        assert h.pools.core.used_mb == 0

    run(main())


def test_a_reconfigure_that_does_not_fit_is_refused() -> None:
    async def main() -> None:
        h = Harness(memory_budget_mb=2048)
        adding = asyncio.ensure_future(h.add(config(min_environments=1)))
        await settle()
        h.backend.finish(0)
        pool = await adding
        refusal = h.pools.reconfigure(pool, config(min_environments=3))
        assert refusal is not None and "ProvisionedConcurrency of 3 environments" in refusal
        assert h.pools.config(pool).min_environments == 1
        assert len(h.backend.starts) == 1
        assert h.pools.reconfigure(pool, config(min_environments=2)) is None
        await settle()
        assert len(h.backend.starts) == 2
        h.backend.finish(1)
        await h.pools.drain(pool, timeout_s=0.0)
        await h.pools.close()

    run(main())


def test_runtimes_in_use_follow_the_pools() -> None:
    """``Pools.runtimes`` (the zygotes to keep) as a scan of every pool's spec would give it."""

    async def main() -> None:
        h = Harness()
        pools = []
        for variant, runtime in (("a", "sklearn"), ("b", "sklearn"), ("c", "xgboost")):
            worker = WorkerSpec(model_dir="/nonexistent/model", memory_mb=1024, runtime=runtime)
            pools.append(h.pools.add(config(variant), worker))
        await h.pools.deploy(pools, check=False)
        assert h.pools.runtimes() == {"sklearn", "xgboost"} == {s.runtime for s in h.pools.specs.values()}
        await h.pools.drain(pools[0], timeout_s=5.0)
        assert h.pools.runtimes() == {"sklearn", "xgboost"}
        await h.pools.drain(pools[1], timeout_s=5.0)
        assert h.pools.runtimes() == {"xgboost"} == {s.runtime for s in h.pools.specs.values()}
        await h.pools.drain(pools[2], timeout_s=5.0)
        assert h.pools.runtimes() == set()
        await h.pools.close()

    run(main())
