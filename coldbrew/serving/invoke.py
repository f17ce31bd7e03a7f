"""One invocation through an environment: lease it, call the worker, translate what went wrong."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from coldbrew.backends.start_trace import breakdown
from coldbrew.backends.worker_client import WorkerConnectionError, WorkerResponse
from coldbrew.errors import ModelError
from coldbrew.serving.environment import Environment
from coldbrew.serving.errors import EnvironmentLost, InvocationTimedOut, ModelAnswered
from coldbrew.serving.invocation import Invocation, InvocationResult
from coldbrew.serving.pools import Lease, Pools
from coldbrew.serving.router import RoutedVariant
from coldbrew.worker import cores

log = logging.getLogger("coldbrew.serving")

CORES_HEADER = cores.HEADER.decode()
MAX_CORES = 1024.0
"""More than any machine a worker runs on has: a larger figure is not a measurement."""

_SENDS = 3
"""An invocation that its worker never read is sent to another environment, at most this many times."""


async def invoke(
    pools: Pools, variant: RoutedVariant, request: Invocation, timeout_s: float
) -> InvocationResult:
    headers = {"Content-Type": request.content_type or "application/octet-stream"}
    if request.accept:
        headers["Accept"] = request.accept
    if request.custom_attributes is not None:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = request.custom_attributes
    for send in range(1, _SENDS + 1):
        lease = await pools.acquire(variant.pool)
        env = lease.env
        started = time.perf_counter()
        busy = None
        try:
            response = await asyncio.wait_for(
                env.client.request("POST", "/invocations", headers, request.body), timeout_s
            )
            busy = reported_cores(response)
        except TimeoutError:
            env.stop_reason = f"The invocation ran past the {timeout_s:g} s limit and was stopped."
            raise _on(
                env,
                InvocationTimedOut(env.stop_reason, OriginalStatusCode=504, OriginalMessage=env.stop_reason),
            ) from None
        except WorkerConnectionError as exc:
            if send < _SENDS and _unread(env, exc):
                # Nothing was done with it: it is admitted again (the lease is released first).
                if env.retiring():
                    pools.retire(env)
                elif env.stop_reason is None:
                    # Refusing connections without retiring: broken, whatever it says; replaced.
                    env.stop_reason = "Its worker stopped accepting connections; it is replaced."
                continue
            raise _on(env, _lost(env, variant)) from None
        finally:
            pools.release(lease, busy)
        latency_us = int((time.perf_counter() - started) * 1_000_000)
        if lease.cold:
            _log_cold_start(request.endpoint, variant, env, lease, time.monotonic())
        if response.status >= 300:
            raise _on(env, model_error(response))
        return InvocationResult(
            body=response.body,
            content_type=response.headers.get("content-type", "application/octet-stream"),
            variant=variant.name,
            custom_attributes=response.headers.get("x-amzn-sagemaker-custom-attributes"),
            cold_start=lease.cold,
            setup_ms=lease.setup_ms,
            model_latency_us=latency_us,
            node=getattr(env.worker, "node_id", None),
        )
    raise AssertionError("the last send returns or raises")


def reported_cores(response: WorkerResponse) -> float | None:
    """The cores the invocation kept busy, as coldbrew's worker says (:mod:`coldbrew.worker.cores`);
    None from a server that does not say (a user's ``exec:`` server) or says nonsense."""
    value = response.headers.get(CORES_HEADER)
    if value is None:
        return None
    try:
        figure = float(value)
    except ValueError:
        return None
    return figure if 0.0 <= figure <= MAX_CORES else None


def _log_cold_start(
    endpoint: str, variant: RoutedVariant, env: Environment, lease: Lease, answered: float
) -> None:
    trace = getattr(env.worker, "start_trace", None)
    if trace is None or not log.isEnabledFor(logging.INFO):
        return
    stages = breakdown(trace, lease.arrived, answered)
    # One line per cold start, "stage=ms" pairs: bench/coldstart.py reads them back from the log.
    warmed = " (a warmed-up spare)" if trace.worker is not None and trace.worker.rehearsed else ""
    log.info(
        "cold start of %s/%s%s: %s",
        endpoint,
        variant.name,
        warmed,
        " ".join(f"{stage}={ms:.3f}" for stage, ms in stages.items()),
    )


def _on(env: Environment, error: ModelError) -> ModelError:
    """The error, naming the node of the environment it happened in (``--backend ray``), so that
    its meter record names the node as an answered invocation's does."""
    error.node = getattr(env.worker, "node_id", None)
    return error


def _unread(env: Environment, error: WorkerConnectionError) -> bool:
    """Whether the worker certainly did nothing with the request: it refused the connection, or,
    exiting with its zygote (it then finishes what it has read), closed it before answering."""
    return error.unsent or (error.before_response and env.retiring())


def _lost(env: Environment, variant: RoutedVariant) -> EnvironmentLost:
    if env.stop_reason is None and env.worker.oom_killed():
        env.stop_reason = (
            f"The model used more than its memory size of {variant.memory_mb} MB and its worker "
            "was stopped; deploy it with a larger MemorySizeInMB."
        )
    if env.stop_reason is None:
        env.stop_reason = "The model's worker process exited while handling this request; it is replaced."
    return EnvironmentLost(env.stop_reason, OriginalStatusCode=500, OriginalMessage=env.stop_reason)


def model_error(response: WorkerResponse) -> ModelAnswered:
    """The worker answered with an error status: SageMaker's ModelError wording."""
    text = response.body.decode(errors="replace")
    try:
        message = str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        message = text
    kind = "client" if response.status < 500 else "server"
    return ModelAnswered(
        f'Received {kind} error ({response.status}) from primary with message "{message}".',
        response.body,
        response.headers.get("content-type", "application/octet-stream"),
        OriginalStatusCode=response.status,
        OriginalMessage=message,
    )
