"""How big an environment is: its scaling config and the worker it runs, from a variant's target."""

from __future__ import annotations

import os

from coldbrew.backends.base import WorkerSpec
from coldbrew.scaling.messages import PoolConfig
from coldbrew.serving.instances import instance_type
from coldbrew.serving.prepare import PreparedVariant
from coldbrew.serving.targets import AsyncConfig, JobSizing, VariantTarget
from coldbrew.worker.zygote import THREAD_ENV

JOB_IDLE_TIMEOUT_S = 30.0
"""A transform job's instance idle this long (its job waits for memory, or is slow to read) is released."""
JOB_NICENESS = 10
"""Transform jobs' workers run below the endpoints' (niceness 0): a job yields the CPU."""
MB_PER_VCPU = 1769
"""Memory that buys one vCPU, as on AWS Lambda; SageMaker Serverless sizes CPU by memory likewise."""


def pool_config(
    endpoint: str,
    variant: VariantTarget,
    idle_timeout_s: float,
    keepalive: str,
    asynchronous: AsyncConfig | None = None,
    job: JobSizing | None = None,
) -> PoolConfig:
    """The scaling config of a variant; ``idle_timeout_s`` and ``keepalive`` are the server's
    defaults, which the variant's own settings override.

    An asynchronous endpoint's instance variant scales to zero like a serverless one (as a
    SageMaker async endpoint with a minimum capacity of 0 does): its instances start as the queue
    fills, each takes MaxConcurrentInvocationsPerInstance requests at a time, and they are released
    after the idle timeout once the queue is empty.
    """
    settings = variant.settings
    if variant.serverless is not None:
        serverless = variant.serverless
        return PoolConfig(
            endpoint=endpoint,
            variant=variant.name,
            serverless=True,
            memory_mb=serverless.memory_mb,
            max_concurrency=serverless.max_concurrency,
            min_environments=serverless.provisioned_concurrency,
            environment_concurrency=1,
            idle_timeout_s=settings.idle_timeout_s or idle_timeout_s,
            keepalive=settings.keepalive_policy or keepalive,
        )
    assert variant.instances is not None
    instance = instance_type(variant.instances.instance_type)
    per_instance = max(2, instance.vcpus)
    if job is not None:
        # A transform job's instances start as its work needs them and yield to the endpoints
        # (preemptible); the job undeploys its pool when it ends, so the idle timeout is short.
        return PoolConfig(
            endpoint=endpoint,
            variant=variant.name,
            serverless=False,
            memory_mb=instance.memory_mb,
            max_concurrency=variant.instances.count * job.concurrent_per_instance,
            min_environments=0,
            environment_concurrency=job.concurrent_per_instance,
            idle_timeout_s=JOB_IDLE_TIMEOUT_S,
            scale_to_zero=True,
            preemptible=True,
            start_with=variant.instances.count,
        )
    if asynchronous is not None:
        per_instance = asynchronous.max_concurrent_per_instance or per_instance
        return PoolConfig(
            endpoint=endpoint,
            variant=variant.name,
            serverless=False,
            memory_mb=instance.memory_mb,
            max_concurrency=variant.instances.count * per_instance,
            min_environments=0,
            environment_concurrency=per_instance,
            idle_timeout_s=settings.idle_timeout_s or idle_timeout_s,
            scale_to_zero=True,
        )
    return PoolConfig(
        endpoint=endpoint,
        variant=variant.name,
        serverless=False,
        memory_mb=instance.memory_mb,
        max_concurrency=variant.instances.count * per_instance,
        min_environments=variant.instances.count,
        environment_concurrency=per_instance,
        idle_timeout_s=float("inf"),
    )


def threads_for(config: PoolConfig) -> int:
    """Numerical-library threads for an environment: proportional to its memory, at most the cores."""
    if config.serverless:
        vcpus = round(config.memory_mb / MB_PER_VCPU)
    else:
        vcpus = config.environment_concurrency
    return max(1, min(os.cpu_count() or 1, vcpus))


def worker_spec(variant: VariantTarget, prepared: PreparedVariant, config: PoolConfig) -> WorkerSpec:
    env = dict(prepared.env)
    image = variant.container.image or ""
    command = variant.settings.serve_command
    if image.startswith("exec:"):
        command = image[len("exec:") :].strip()
    elif image:
        # The worker picks its runtime (framework container conventions) from the image.
        env.setdefault("COLDBREW_IMAGE", image)
    threads = str(threads_for(config))
    if config.preemptible and variant.instances is not None:
        # A job's instance gets the CPUs of its instance type, as a transform container would.
        vcpus = instance_type(variant.instances.instance_type).vcpus
        threads = str(max(1, min(os.cpu_count() or 1, vcpus)))
    for name in THREAD_ENV:
        env.setdefault(name, threads)
    return WorkerSpec(
        model_dir=prepared.model_dir,
        labels=prepared.labels,
        fresh=prepared.fresh,
        memory_mb=config.memory_mb,
        environment_concurrency=config.environment_concurrency,
        env=env,
        command=command,
        runtime=prepared.runtime,
        nice=JOB_NICENESS if config.preemptible else 0,
        tenant=config.endpoint,
        network_isolation=variant.container.network_isolation,
    )
