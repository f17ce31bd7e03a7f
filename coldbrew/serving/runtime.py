"""Serving: the endpoints that run, how an invocation reaches a worker, and housekeeping.

All pool state lives on the gateway's event loop. The reconciler's threads reach it through
``deploy``/``undeploy``, which hop onto the loop; the invoke path never leaves it and never
touches the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import psutil

from coldbrew.artifacts import ArtifactError, ArtifactStore
from coldbrew.backends.base import Backend, WorkerSpec, WorkerStartError
from coldbrew.control.deployment import Deployment, VariantSpec
from coldbrew.control.reconciler import DeployError
from coldbrew.errors import ModelError, ThrottlingException, ValidationError
from coldbrew.serving.budget import MemoryBudget
from coldbrew.serving.instances import instance_type
from coldbrew.serving.invocation import (
    INVOCATION_TIMEOUT_S,
    PROVISIONED_MAX_PAYLOAD,
    SERVERLESS_MAX_PAYLOAD,
    Invocation,
    InvocationResult,
)
from coldbrew.serving.pool import PoolConfig, VariantPool
from coldbrew.backends.worker_client import WorkerConnectionError, WorkerResponse
from coldbrew.worker.runtimes import detect_runtime
from coldbrew.worker.zygote import THREAD_ENV

log = logging.getLogger("coldbrew.serving")

HOUSEKEEPING_INTERVAL_S = 0.25
MiB = 1024 * 1024


@dataclass
class EndpointRuntime:
    name: str
    pools: dict[str, VariantPool]
    fingerprint: str
    """Identifies what the pools run; a deploy with the same fingerprint only reconfigures them."""

    def choose(self, target_variant: str | None) -> VariantPool:
        if target_variant is not None:
            pool = self.pools.get(target_variant)
            if pool is None:
                raise ValidationError(
                    f"The variant {target_variant} is not present in endpoint {self.name}; "
                    f"its variants are {', '.join(sorted(self.pools))}."
                )
            return pool
        pools = [p for p in self.pools.values() if p.config.weight > 0]
        if len(pools) == 1:
            return pools[0]
        return random.choices(pools, weights=[p.config.weight for p in pools])[0]


def default_memory_budget_mb() -> int:
    """80% of the machine's memory."""
    return int(psutil.virtual_memory().total * 0.8 / MiB)


def _fingerprint(deployment: Deployment) -> str:
    return hashlib.sha256(json.dumps(deployment.to_json(), sort_keys=True).encode()).hexdigest()


class Serving:
    def __init__(
        self,
        backend: Backend,
        artifacts: ArtifactStore,
        idle_timeout_s: float,
        invocation_timeout_s: float = INVOCATION_TIMEOUT_S,
        memory_budget_mb: int | None = None,
        keepalive: str = "fixed",
    ) -> None:
        self.backend = backend
        self.keepalive = keepalive
        self.budget = MemoryBudget(memory_budget_mb or default_memory_budget_mb(), self._all_pools)
        self.invocation_timeout_s = invocation_timeout_s
        self.artifacts = artifacts
        self.idle_timeout_s = idle_timeout_s
        self.endpoints: dict[str, EndpointRuntime] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._draining: set[asyncio.Task[None]] = set()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.backend.maintain()
        self._housekeeping = asyncio.create_task(self._housekeep())

    async def close(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        runtimes, self.endpoints = list(self.endpoints.values()), {}
        await asyncio.gather(
            *(p.drain(self.invocation_timeout_s + 5) for r in runtimes for p in r.pools.values()),
            *self._draining,
            return_exceptions=True,
        )
        await self.backend.close()

    # --- the Deployer interface, called from reconciler threads -------------------------------

    def _on_loop(self, coro: Any) -> Any:
        if self._loop is None:
            raise DeployError("coldbrew is shutting down; the endpoint will be deployed at the next start.")
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    def deploy(
        self, endpoint: str, deployment: Deployment, variants: list[dict[str, Any]], *, verify: bool
    ) -> None:
        model_dirs: dict[str, str] = {}
        runtimes: dict[str, str] = {}
        for variant in deployment.variants:
            try:
                model_dirs[variant.name] = str(self.artifacts.materialize(variant.container))
            except ArtifactError as exc:
                raise DeployError(str(exc)) from None
            # Reads the model directory, so it is decided here, off the event loop.
            runtimes[variant.name] = detect_runtime(
                model_dirs[variant.name],
                variant.container.get("Image"),
                variant.container.get("Environment", {}),
            )
        self._on_loop(self._deploy(endpoint, deployment, variants, model_dirs, runtimes, verify))

    def undeploy(self, endpoint: str) -> None:
        if self._loop is not None and endpoint in self.endpoints:
            self._on_loop(self._undeploy(endpoint))

    # --- on the loop ---------------------------------------------------------------------------

    def _pool_config(self, endpoint: str, variant: VariantSpec, summary: dict[str, Any]) -> PoolConfig:
        weight = float(summary.get("DesiredWeight", variant.weight))
        if variant.serverless is not None:
            serverless = summary.get("DesiredServerlessConfig", variant.serverless)
            return PoolConfig(
                endpoint=endpoint,
                variant=variant.name,
                serverless=True,
                memory_mb=serverless["MemorySizeInMB"],
                max_envs=serverless["MaxConcurrency"],
                min_envs=serverless.get("ProvisionedConcurrency", 0),
                env_capacity=1,
                idle_timeout_s=self._idle_timeout(variant),
                weight=weight,
                keepalive=variant.container.get("Environment", {}).get(
                    "COLDBREW_KEEPALIVE_POLICY", self.keepalive
                ),
            )
        instance = instance_type(variant.instance_type or "")
        count = int(summary.get("DesiredInstanceCount", variant.instance_count or 1))
        return PoolConfig(
            endpoint=endpoint,
            variant=variant.name,
            serverless=False,
            memory_mb=instance.memory_mb,
            max_envs=count,
            min_envs=count,
            env_capacity=max(2, instance.vcpus),
            idle_timeout_s=float("inf"),
            weight=weight,
        )

    def _idle_timeout(self, variant: VariantSpec) -> float:
        override = variant.container.get("Environment", {}).get("COLDBREW_IDLE_TIMEOUT_S")
        try:
            return float(override) if override is not None else self.idle_timeout_s
        except ValueError:
            return self.idle_timeout_s

    async def _deploy(
        self,
        endpoint: str,
        deployment: Deployment,
        variants: list[dict[str, Any]],
        model_dirs: dict[str, str],
        runtimes: dict[str, str],
        verify: bool,
    ) -> None:
        summaries = {s["VariantName"]: s for s in variants}
        fingerprint = _fingerprint(deployment)
        current = self.endpoints.get(endpoint)
        if current is not None and current.fingerprint == fingerprint:
            for variant in deployment.variants:
                current.pools[variant.name].reconfigure(
                    self._pool_config(endpoint, variant, summaries[variant.name])
                )
            await self._warm(list(current.pools.values()))
            return
        pools: dict[str, VariantPool] = {}
        for variant in deployment.variants:
            config = self._pool_config(endpoint, variant, summaries.get(variant.name, {}))
            spec = _worker_spec(variant, model_dirs[variant.name], runtimes[variant.name], config)
            try:
                pools[variant.name] = VariantPool(config, spec, self.backend, self.budget)
            except ValueError as exc:  # an unknown keep-alive policy name
                raise DeployError(f"Variant {variant.name}: {exc}") from None
        try:
            await self._warm(list(pools.values()))
            if verify:
                await self._verify(list(pools.values()))
        except DeployError:
            await asyncio.gather(*(p.drain(0) for p in pools.values()), return_exceptions=True)
            raise
        # New environments are ready before the old ones drain: the swap is one assignment.
        self.endpoints[endpoint] = EndpointRuntime(deployment.config_name, pools, fingerprint)
        if current is not None:
            self._drain_later(current)

    def _all_pools(self) -> list[VariantPool]:
        return [pool for runtime in self.endpoints.values() for pool in runtime.pools.values()]

    async def _warm(self, pools: list[VariantPool]) -> None:
        results = await asyncio.gather(*(p.ensure_minimum() for p in pools), return_exceptions=True)
        for pool, result in zip(pools, results, strict=True):
            if isinstance(result, WorkerStartError):
                raise DeployError(f"Variant {pool.config.variant}: the model failed to load: {result}")
            if isinstance(result, ThrottlingException):
                raise DeployError(
                    f"Variant {pool.config.variant}: its ProvisionedConcurrency does not fit: {result}"
                )
            if isinstance(result, BaseException):
                raise result

    async def _verify(self, pools: list[VariantPool]) -> None:
        """Prove that each scale-to-zero variant's model loads: start a worker, then release it."""
        for pool in pools:
            if pool.config.min_envs > 0:
                continue  # its warm environments already proved it
            memory_mb = pool.config.memory_mb if pool.budget is not None else 0
            await self._reserve_for_check(memory_mb, pool)
            try:
                worker = await self.backend.start(pool.spec)
            except WorkerStartError as exc:
                raise DeployError(f"Variant {pool.config.variant}: the model failed to load: {exc}") from None
            finally:
                self.budget.release(memory_mb)
            await worker.stop()

    async def _reserve_for_check(self, memory_mb: int, pool: VariantPool, patience_s: float = 120.0) -> None:
        """A load check is brief: wait for room in the memory budget rather than fail the deploy."""
        deadline = time.monotonic() + patience_s
        while True:
            try:
                self.budget.reserve(memory_mb, pool)
                return
            except ThrottlingException as exc:
                if time.monotonic() > deadline or memory_mb > self.budget.budget_mb:
                    raise DeployError(
                        f"Variant {pool.config.variant}: no room to check that the model loads: {exc.message}"
                    ) from None
            await asyncio.sleep(0.05)

    def _drain_later(self, runtime: EndpointRuntime) -> None:
        async def drain() -> None:
            await asyncio.gather(
                *(p.drain(self.invocation_timeout_s + 5) for p in runtime.pools.values()),
                return_exceptions=True,
            )

        task = asyncio.create_task(drain())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _undeploy(self, endpoint: str) -> None:
        runtime = self.endpoints.pop(endpoint, None)
        if runtime is not None:
            for pool in runtime.pools.values():
                pool.closed = True
            self._drain_later(runtime)

    async def _housekeep(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            now = time.monotonic()
            self.backend.maintain()
            for runtime in list(self.endpoints.values()):
                for pool in runtime.pools.values():
                    self._watch_memory(pool)
                    pool.reap(now)
                    pool.maintain()

    def _watch_memory(self, pool: VariantPool) -> None:
        limit = pool.config.memory_mb * MiB
        for env in list(pool.envs):
            if env.worker.memory_enforced:
                continue  # the kernel enforces it exactly
            rss = env.worker.rss_bytes()
            if rss > limit and env.stop_reason is None:
                env.stop_reason = (
                    f"The model used {rss / MiB:.0f} MB, more than its memory size of "
                    f"{pool.config.memory_mb} MB, "
                    "and its worker was stopped; deploy it with a larger MemorySizeInMB."
                )
                log.warning(
                    "%s/%s: worker %d stopped: %s",
                    pool.config.endpoint,
                    pool.config.variant,
                    env.worker.pid,
                    env.stop_reason,
                )
                pool.discard(env)

    # --- the hot path --------------------------------------------------------------------------

    def runtime(self, endpoint: str) -> EndpointRuntime | None:
        return self.endpoints.get(endpoint.lower())

    async def invoke(self, runtime: EndpointRuntime, request: Invocation) -> InvocationResult:
        pool = runtime.choose(request.target_variant)
        limit = SERVERLESS_MAX_PAYLOAD if pool.config.serverless else PROVISIONED_MAX_PAYLOAD
        if len(request.body) > limit:
            raise ValidationError(
                f"Request payload of {len(request.body)} bytes exceeds the {limit // MiB} MB limit of "
                f"{'serverless' if pool.config.serverless else 'real-time'} endpoints."
            )
        lease = await pool.acquire()
        env = lease.env
        headers = {"Content-Type": request.content_type or "application/octet-stream"}
        if request.accept:
            headers["Accept"] = request.accept
        if request.custom_attributes is not None:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = request.custom_attributes
        started = time.perf_counter()
        try:
            response = await asyncio.wait_for(
                env.client.request("POST", "/invocations", headers, request.body), self.invocation_timeout_s
            )
        except TimeoutError:
            env.stop_reason = (
                f"The invocation ran past the {self.invocation_timeout_s:g} s limit and was stopped."
            )
            pool.discard(env)
            raise ModelError(
                env.stop_reason, OriginalStatusCode=504, OriginalMessage=env.stop_reason
            ) from None
        except WorkerConnectionError:
            pool.discard(env)
            if env.stop_reason is None and env.worker.oom_killed():
                env.stop_reason = (
                    f"The model used more than its memory size of {pool.config.memory_mb} MB and its worker "
                    "was stopped; deploy it with a larger MemorySizeInMB."
                )
            reason = (
                env.stop_reason
                or "The model's worker process exited while handling this request; it is replaced."
            )
            raise ModelError(reason, OriginalStatusCode=500, OriginalMessage=reason) from None
        finally:
            pool.release(env)
        latency_us = int((time.perf_counter() - started) * 1_000_000)
        if response.status >= 300:
            raise _model_error(response)
        return InvocationResult(
            body=response.body,
            content_type=response.headers.get("content-type", "application/octet-stream"),
            variant=pool.config.variant,
            custom_attributes=response.headers.get("x-amzn-sagemaker-custom-attributes"),
            cold_start=lease.cold,
            setup_ms=lease.setup_ms,
            model_latency_us=latency_us,
        )

    # --- read-only, for the meter's sampling thread ---------------------------------------------

    def environment_snapshot(self) -> list[dict[str, Any]]:
        """Per live variant, the environments it holds: read off the loop by the meter's thread.

        Only copies (``list()``) of the loop's containers are iterated, so a concurrent change can at
        worst raise RuntimeError, which the meter treats as "skip this sample".
        """
        variants = []
        for name, runtime in list(self.endpoints.items()):
            for pool in list(runtime.pools.values()):
                config = pool.config
                envs = [
                    {
                        "id": env.id,
                        "memory_mb": env.memory_mb,
                        "in_flight": env.in_flight,
                        "rss_bytes": env.worker.rss_bytes() if env.worker.is_alive() else 0,
                    }
                    for env in list(pool.envs)
                ]
                variants.append(
                    {
                        "endpoint": name,
                        "variant": config.variant,
                        "serverless": config.serverless,
                        "memory_mb": config.memory_mb,
                        "max_concurrency": config.max_envs,
                        "environments": envs,
                    }
                )
        return variants


MB_PER_VCPU = 1769
"""Memory that buys one vCPU, as on AWS Lambda; SageMaker Serverless sizes CPU by memory likewise."""


def threads_for(config: PoolConfig) -> int:
    """Numerical-library threads for an environment: proportional to its memory, at most the cores."""
    if config.serverless:
        vcpus = round(config.memory_mb / MB_PER_VCPU)
    else:
        vcpus = config.env_capacity
    return max(1, min(os.cpu_count() or 1, vcpus))


def _worker_spec(variant: VariantSpec, model_dir: str, runtime: str, config: PoolConfig) -> WorkerSpec:
    container = variant.container
    env = {k: str(v) for k, v in container.get("Environment", {}).items()}
    image = container.get("Image") or ""
    command = env.get("COLDBREW_SERVE_COMMAND")
    if image.startswith("exec:"):
        command = image[len("exec:") :].strip()
    elif image:
        # The worker picks its runtime (framework container conventions) from the image.
        env.setdefault("COLDBREW_IMAGE", image)
    threads = str(threads_for(config))
    for name in THREAD_ENV:
        env.setdefault(name, threads)
    return WorkerSpec(
        model_dir=model_dir,
        memory_mb=config.memory_mb,
        environment_concurrency=config.env_capacity,
        env=env,
        command=command,
        runtime=runtime,
    )


def _model_error(response: WorkerResponse) -> ModelError:
    text = response.body.decode(errors="replace")
    try:
        message = str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        message = text
    kind = "client" if response.status < 500 else "server"
    return ModelError(
        f'Received {kind} error ({response.status}) from primary with message "{message}".',
        OriginalStatusCode=response.status,
        OriginalMessage=message,
    )
