"""Serving: the endpoints that run now, deploys and undeploys, and the invoke entry point.

All pool state lives on the gateway's event loop. The reconciler's threads reach it through
``deploy``/``undeploy``, which hop onto the loop; the invoke path never leaves it and never
touches the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import psutil

from coldbrew.artifacts import ArtifactStore
from coldbrew.artifacts.packages import PackageCache
from coldbrew.backends.base import Backend, ClusterMemory, RuntimeHelpers, SplitMemory
from coldbrew.backends.processes import cpu_seconds
from coldbrew.backends.worker_client import WorkerConnectionError, WorkerResponse
from coldbrew.errors import ModelNotReadyException
from coldbrew.logs.collector import LogCollector
from coldbrew.scaling.core import CLUSTER_BUDGET, ScalingCore
from coldbrew.scaling.messages import PoolConfig
from coldbrew.serving.environment import Environment
from coldbrew.serving.errors import DeployError
from coldbrew.serving.invocation import INVOCATION_TIMEOUT_S, Invocation, InvocationResult
from coldbrew.serving.invoke import invoke
from coldbrew.serving.pools import Pools
from coldbrew.serving.prepare import PreparedVariant, prepare_variant
from coldbrew.serving.router import LiveEndpoint, RoutedVariant
from coldbrew.serving.sizing import pool_config, worker_spec
from coldbrew.serving.targets import EndpointTarget
from coldbrew.serving.watchdog import watch_memory

log = logging.getLogger("coldbrew.serving")

HOUSEKEEPING_INTERVAL_S = 0.25
"""How often worker health and memory are sampled (the scaling core keeps its own timer)."""
MiB = 1024 * 1024


def default_memory_budget_mb() -> int:
    """80% of the machine's memory."""
    return int(psutil.virtual_memory().total * 0.8 / MiB)


class Serving:
    def __init__(
        self,
        backend: Backend,
        artifacts: ArtifactStore,
        packages: PackageCache,
        idle_timeout_s: float,
        invocation_timeout_s: float = INVOCATION_TIMEOUT_S,
        memory_budget_mb: int | None = None,
        keepalive: str = "fixed",
        logs: LogCollector | None = None,
        max_starting: int | None = None,
        cpu_slots: int | None = None,
    ) -> None:
        self.backend = backend
        self.artifacts = artifacts
        self.packages = packages
        self.idle_timeout_s = idle_timeout_s
        self.invocation_timeout_s = invocation_timeout_s
        self.keepalive = keepalive
        # The budget: COLDBREW_MEMORY_BUDGET_MB when set; else a cluster's room, followed as its
        # nodes join and leave (the Ray backend); else 80% of this machine's memory.
        self._budget_from_backend = not memory_budget_mb and isinstance(backend, ClusterMemory)
        if not memory_budget_mb:
            if isinstance(backend, ClusterMemory):
                memory_budget_mb = backend.memory_capacity_mb()
            else:
                memory_budget_mb = default_memory_budget_mb()
        self.pools = Pools(
            backend, memory_budget_mb, logs=logs, max_starting=max_starting, cpu_slots=cpu_slots
        )
        if self._budget_from_backend:
            self.pools.core.wording = CLUSTER_BUDGET
        self.endpoints: dict[str, LiveEndpoint] = {}
        """By lower-cased endpoint name."""
        self._variant_index: _VariantIndex | None = None
        """``environment_snapshot``'s view of ``endpoints``, made again when that changes."""
        self.jobs: dict[str, LiveEndpoint] = {}
        """Batch transform jobs' pools, by lower-cased job name: apart from the endpoints, so no
        client's invocation can reach one."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._draining: set[asyncio.Task[None]] = set()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.backend.maintain()
        self.pools.start()
        self._housekeeping = asyncio.create_task(self._housekeep())

    async def close(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        live = [*self.endpoints.values(), *self.jobs.values()]
        self.endpoints, self.jobs = {}, {}
        await asyncio.gather(
            *(
                self.pools.drain(v.pool, self.invocation_timeout_s + 5)
                for e in live
                for v in e.variants.values()
            ),
            *self._draining,
            return_exceptions=True,
        )
        await self.pools.close()
        await self.backend.close()

    # --- the Deployer interface, called from reconciler threads -------------------------------

    def _on_loop(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._loop is None:
            coro.close()
            raise DeployError("coldbrew is shutting down; the endpoint will be deployed at the next start.")
        future: Future[None] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        future.result()

    def deploy(self, target: EndpointTarget, *, verify: bool) -> None:
        prepared = {v.name: prepare_variant(v, self.artifacts, self.packages) for v in target.variants}
        self._on_loop(self._deploy(target, prepared, verify))

    def undeploy(self, endpoint: str) -> None:
        if self._loop is not None and endpoint.lower() in self.endpoints:
            self._on_loop(self._undeploy(endpoint.lower()))

    # --- batch transform jobs, called on the loop ----------------------------------------------

    async def deploy_job(self, target: EndpointTarget) -> LiveEndpoint:
        """Start the pool of a transform job (``target.endpoint`` is the job's name): its model
        prepared (blocking, on a thread) and checked, with no environment kept once checked."""
        assert target.job is not None
        loop = asyncio.get_running_loop()
        prepared = {
            v.name: await loop.run_in_executor(None, prepare_variant, v, self.artifacts, self.packages)
            for v in target.variants
        }
        await self._deploy(target, prepared, verify=True, table=self.jobs)
        return self.jobs[target.endpoint.lower()]

    async def undeploy_job(self, job: str) -> None:
        live = self.jobs.pop(job.lower(), None)
        if live is not None:
            self._drain_later(live, timeout_s=5.0)

    # --- on the loop ---------------------------------------------------------------------------

    async def _deploy(
        self,
        target: EndpointTarget,
        prepared: dict[str, PreparedVariant],
        verify: bool,
        table: dict[str, LiveEndpoint] | None = None,
    ) -> None:
        table = self.endpoints if table is None else table
        key = target.endpoint.lower()
        current = table.get(key)
        configs = {
            v.name: pool_config(
                target.endpoint, v, self.idle_timeout_s, self.keepalive, target.asynchronous, target.job
            )
            for v in target.variants
        }
        if current is not None and current.fingerprint == target.fingerprint:
            self._reconfigure(current, target, configs)
            table[key] = self._live(target, {n: v.pool for n, v in current.variants.items()})
            return
        pools: dict[str, int] = {}
        try:
            for variant in target.variants:
                config = configs[variant.name]
                spec = worker_spec(variant, prepared[variant.name], config)
                pools[variant.name] = self.pools.add(config, spec)
        except ValueError as exc:  # an unknown keep-alive policy name
            await self._drain_all(list(pools.values()), 0)
            raise DeployError(f"{exc}") from None
        try:
            await self.pools.deploy(list(pools.values()), check=verify)
        except DeployError:
            await self._drain_all(list(pools.values()), 0)
            raise
        # New environments are ready before the old ones drain: the swap is one assignment.
        table[key] = self._live(target, pools)
        if current is not None:
            self._drain_later(current)

    def _reconfigure(
        self, current: LiveEndpoint, target: EndpointTarget, configs: dict[str, PoolConfig]
    ) -> None:
        """New weights and capacities for the running pools, all or none: DeployError if one
        variant's are refused (the memory budget), the others then keep what they had."""
        applied: list[tuple[int, PoolConfig]] = []
        for variant in target.variants:
            pool = current.variants[variant.name].pool
            before = self.pools.config(pool)
            refusal = self.pools.reconfigure(pool, configs[variant.name])
            if refusal is not None:
                for done, config in reversed(applied):
                    # Back as it was: what it held a moment ago still fits, nothing else ran since.
                    self.pools.reconfigure(done, config)
                raise DeployError(f"Variant {variant.name}: {refusal}")
            applied.append((pool, before))

    def _live(self, target: EndpointTarget, pools: dict[str, int]) -> LiveEndpoint:
        variants = {}
        for variant in target.variants:
            config = self.pools.config(pools[variant.name])
            variants[variant.name] = RoutedVariant(
                variant.name, pools[variant.name], variant.weight, config.serverless, config.memory_mb
            )
        capture = target.capture if target.capture is not None and target.capture.capturing else None
        return LiveEndpoint(target.endpoint, variants, target.fingerprint, target.asynchronous, capture)

    async def _drain_all(self, pools: list[int], timeout_s: float) -> None:
        await asyncio.gather(*(self.pools.drain(p, timeout_s) for p in pools), return_exceptions=True)

    def _drain_later(self, endpoint: LiveEndpoint, timeout_s: float | None = None) -> None:
        pools = [v.pool for v in endpoint.variants.values()]
        if timeout_s is None:
            timeout_s = self.invocation_timeout_s + 5
        task = asyncio.create_task(self._drain_all(pools, timeout_s))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _undeploy(self, key: str) -> None:
        endpoint = self.endpoints.pop(key, None)
        if endpoint is not None:
            self._drain_later(endpoint)

    async def _housekeep(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            if isinstance(self.backend, RuntimeHelpers):
                # Zygotes: none kept for a runtime no pool uses; theirs comes out of the budget.
                self.backend.use_runtimes(self.pools.runtimes())
                self.pools.helpers(self.backend.helper_rss_bytes() // MiB)
            if self._budget_from_backend and isinstance(self.backend, ClusterMemory):
                self.pools.budget(self.backend.memory_capacity_mb())
            if isinstance(self.backend, SplitMemory):
                for wanted in self.backend.room_wanted():
                    self.pools.reclaim(wanted)
            self.backend.maintain()
            self.pools.reap_dead()
            watch_memory(self.pools)

    # --- the hot path --------------------------------------------------------------------------

    def endpoint(self, name: str) -> LiveEndpoint | None:
        return self.endpoints.get(name.lower())

    async def invoke(
        self, variant: RoutedVariant, request: Invocation, timeout_s: float | None = None
    ) -> InvocationResult:
        """``timeout_s``: the invocation's own limit (async requests), else the server's."""
        timeout_s = timeout_s or self.invocation_timeout_s
        try:
            return await invoke(self.pools, variant, request, timeout_s)
        except ModelNotReadyException:
            # Its pool was replaced (UpdateEndpoint) between the choice of a variant and its
            # admission, or while it waited: the endpoint's current variants serve it, chosen
            # again as the client asked (by TargetVariant or by weight).
            current = self.endpoint(request.endpoint)
            if current is None:
                raise
            replacement = current.choose(request.target_variant)
            if replacement.pool == variant.pool:
                raise
            return await invoke(self.pools, replacement, request, timeout_s)

    async def get(self, variant: RoutedVariant, path: str) -> WorkerResponse:
        """A GET to one of the variant's environments (SageMaker's GET /execution-parameters to a
        transform job's model server), started for it if none is running."""
        lease = await self.pools.acquire(variant.pool)
        try:
            return await asyncio.wait_for(lease.env.client.request("GET", path, {}), 10.0)
        except (TimeoutError, WorkerConnectionError) as e:
            raise ModelNotReadyException(f"The model server did not answer GET {path}: {e}") from None
        finally:
            self.pools.release(lease)

    # --- read-only, for the meter's sampling thread ---------------------------------------------

    def environment_snapshot(self) -> list[dict[str, Any] | tuple[str, str, bool, int]]:
        """Per live variant, the environments it holds: read off the loop by the meter's thread.

        Only copies (``list()``) of the loop's containers are iterated, so a concurrent change can at
        worst raise RuntimeError, which the meter treats as "skip this sample". An instance
        variant's environments also carry ``cpu_seconds``, the CPU time their worker (and its
        children) used so far, None once it is gone: the meter turns it into CPUUtilization. A
        variant whose pool holds no environment is only a tuple (endpoint, variant, serverless,
        memory_mb), ``coldbrew.metering.meter.Idle``: with 10,000 endpoints scaled to zero, a dict
        for each one twice a second was most of the meter thread's time.
        """
        core = self.pools.core
        # Grouped by pool once: with 10,000 endpoints, scanning every environment for each
        # variant was most of the meter thread's time.
        by_pool: dict[int, list[Environment]] = {}
        for env in list(self.pools.environments.values()):
            by_pool.setdefault(env.pool, []).append(env)
        keys, live = list(self.endpoints), list(self.endpoints.values())
        index = self._variant_index
        if index is None or index.keys != keys or index.live != live:
            # Built again only when the endpoint table changed (a deploy swaps in a new
            # LiveEndpoint): walking 10,000 endpoints twice a second cost 10-40 ms a walk.
            index = self._variant_index = _VariantIndex.of(keys, live, core)
        variants: list[dict[str, Any] | tuple[str, str, bool, int]] = []
        active = [pool for pool in by_pool if pool in index.by_pool]
        if not active:
            variants.extend(index.forms)
            return variants
        held = set(active)
        variants.extend(form for pool, form in zip(index.pools, index.forms, strict=True) if pool not in held)
        for pool_id in active:
            pool = core.pools.get(pool_id)
            if pool is None:
                continue
            name, variant_name = index.by_pool[pool_id][:2]
            envs = []
            for env in by_pool[pool_id]:
                state = core.envs.get(env.id)
                if state is None:
                    continue
                alive = env.worker.is_alive()
                reading: dict[str, Any] = {
                    "id": env.id,
                    "memory_mb": env.memory_mb,
                    "in_flight": state.in_flight,
                    "rss_bytes": env.worker.rss_bytes() if alive else 0,
                }
                if not pool.config.serverless:
                    # SageMaker publishes CPUUtilization for instance variants only.
                    children = bool(getattr(env.worker, "counts_children", False))
                    reading["cpu_seconds"] = cpu_seconds(env.worker.pid, children) if alive else None
                envs.append(reading)
            variants.append(
                {
                    "endpoint": name,
                    "variant": variant_name,
                    "serverless": pool.config.serverless,
                    "memory_mb": pool.config.memory_mb,
                    "max_concurrency": pool.config.max_concurrency,
                    "environments": envs,
                }
            )
        return variants


@dataclass(frozen=True, slots=True)
class _VariantIndex:
    """Every live variant as the meter samples it when it holds no environment, by pool."""

    keys: list[str]
    live: list[LiveEndpoint]
    """The endpoint table it was made from (compared by identity first: cheap when unchanged)."""
    pools: list[int]
    forms: list[tuple[str, str, bool, int]]
    """(endpoint, variant, serverless, memory_mb), in the order of ``pools``."""
    by_pool: dict[int, tuple[str, str, bool, int]]

    @classmethod
    def of(cls, keys: list[str], live: list[LiveEndpoint], core: ScalingCore) -> _VariantIndex:
        pools, forms = [], []
        for name, endpoint in zip(keys, live, strict=True):
            for variant in list(endpoint.variants.values()):
                pool = core.pools.get(variant.pool)
                if pool is None:
                    continue
                pools.append(variant.pool)
                forms.append((name, variant.name, pool.config.serverless, pool.config.memory_mb))
        return cls(keys, live, pools, forms, dict(zip(pools, forms, strict=True)))
