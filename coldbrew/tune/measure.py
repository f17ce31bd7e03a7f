"""Deploying a model at one memory size and measuring it: cold start, warm latency, throughput.

Everything goes through the SageMaker API as a user's code would (boto3), so the figures include
what a client sees: HTTP, the gateway, routing and the model.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from coldbrew.tune.stats import LatencySummary, summarize

Progress = Callable[[str, int], None]
"""Told (what is running, invocations just finished) as a measurement goes."""


@dataclass(frozen=True)
class Payload:
    body: bytes
    content_type: str


@dataclass
class LevelResult:
    """One concurrency level of one configuration."""

    concurrency: int
    sent: int
    """Measured invocations sent (the warm-up ones are counted in ``warmup_sent``)."""
    errors: int
    latency: LatencySummary | None
    wall_s: float
    throughput_per_s: float
    """Successful invocations a second with ``concurrency`` requests kept in flight."""
    warmup_sent: int
    warmup_errors: int
    error_samples: list[str] = field(default_factory=list)


@dataclass
class Attempt:
    ok: bool
    latency_ms: float
    error: str | None = None


def invoke_once(runtime: Any, endpoint: str, payload: Payload) -> Attempt:
    """One InvokeEndpoint, timed from the request to the last byte of the answer."""
    started = time.perf_counter()
    try:
        response = runtime.invoke_endpoint(
            EndpointName=endpoint, Body=payload.body, ContentType=payload.content_type
        )
        response["Body"].read()
    except Exception as exc:  # every failure is a measured error, whatever its kind
        return Attempt(False, (time.perf_counter() - started) * 1000, _describe(exc))
    return Attempt(True, (time.perf_counter() - started) * 1000)


def _describe(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'Error')}: {str(error.get('Message', exc))[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


@dataclass
class Workers:
    """The threads that keep requests in flight, and the flag that stops them (Ctrl-C, an error):
    without it they would go on sending the rest of their batch while the endpoints are deleted."""

    pool: ThreadPoolExecutor
    stop: threading.Event = field(default_factory=threading.Event)


def run_batch(
    runtime: Any,
    endpoint: str,
    payload: Payload,
    count: int,
    concurrency: int,
    workers: Workers,
    on_done: Callable[[Attempt], None] | None = None,
) -> tuple[list[Attempt], float]:
    """``count`` invocations with ``concurrency`` in flight at a time; the attempts and wall time."""
    attempts: list[Attempt] = []
    lock = threading.Lock()
    remaining = [count]

    def worker() -> None:
        # Each worker takes the next invocation as soon as its last one is answered, so exactly
        # ``concurrency`` requests are in flight until the batch runs out.
        while True:
            with lock:
                if remaining[0] <= 0 or workers.stop.is_set():
                    return
                remaining[0] -= 1
            attempt = invoke_once(runtime, endpoint, payload)
            with lock:
                attempts.append(attempt)
            if on_done is not None:
                on_done(attempt)

    started = time.perf_counter()
    futures = [workers.pool.submit(worker) for _ in range(min(concurrency, count))]
    for future in futures:
        future.result()
    return attempts, time.perf_counter() - started


def measure_level(
    runtime: Any,
    endpoint: str,
    payload: Payload,
    concurrency: int,
    invocations: int,
    workers: Workers,
    progress: Progress,
) -> LevelResult:
    label = f"{endpoint} x{concurrency}"
    # Warm-up: ``concurrency`` requests at once, so the level's environments exist (each serves
    # one request at a time) and their cold starts do not land in the warm percentiles.
    warmup, _ = run_batch(runtime, endpoint, payload, concurrency, concurrency, workers)
    attempts, wall = run_batch(
        runtime, endpoint, payload, invocations, concurrency, workers, lambda _a: progress(label, 1)
    )
    ok = [a.latency_ms for a in attempts if a.ok]
    errors = [a.error or "error" for a in attempts if not a.ok]
    return LevelResult(
        concurrency=concurrency,
        sent=len(attempts),
        errors=len(errors),
        latency=summarize(ok),
        wall_s=wall,
        throughput_per_s=len(ok) / wall if wall > 0 else 0.0,
        warmup_sent=len(warmup),
        warmup_errors=sum(1 for a in warmup if not a.ok),
        error_samples=sorted(set(errors))[:5],
    )


IDLE_TIMEOUT_S = 2.0
"""The idle timeout of tune's copy of the model: short, so an endpoint scales to zero soon after
deploy (whose load check leaves one environment warm) and the next invocation is a cold start."""

_MODEL_KEYS = ("ExecutionRoleArn", "EnableNetworkIsolation", "VpcConfig", "InferenceExecutionConfig")


class Deployments:
    """The models, endpoint configs and endpoints a tune run made, to delete them all whatever
    happens."""

    def __init__(self, sm: Any) -> None:
        self.sm = sm
        self.models: list[str] = []
        self.endpoints: list[str] = []
        self.configs: list[str] = []

    def copy_model(self, model: str, prefix: str) -> str:
        """A copy of ``model`` whose environments are released after :data:`IDLE_TIMEOUT_S` idle.

        The user's Model is not changed: the idle timeout is a model's Environment key
        (COLDBREW_IDLE_TIMEOUT_S), so tune deploys a copy with it set, same container and data.
        """
        described = self.sm.describe_model(ModelName=model)
        name = unique_name(prefix, "model")
        request: dict[str, Any] = {"ModelName": name}
        request.update({key: described[key] for key in _MODEL_KEYS if key in described})
        timing = {"COLDBREW_IDLE_TIMEOUT_S": f"{IDLE_TIMEOUT_S:g}", "COLDBREW_KEEPALIVE_POLICY": "fixed"}
        if "PrimaryContainer" in described:
            request["PrimaryContainer"] = _with_env(described["PrimaryContainer"], timing)
        if "Containers" in described:
            request["Containers"] = [_with_env(c, timing) for c in described["Containers"]]
        self.sm.create_model(**request)
        self.models.append(name)
        return name

    def deploy(self, model: str, memory_mb: int, max_concurrency: int, prefix: str) -> str:
        """A serverless endpoint of ``memory_mb`` for ``model``; its name (also its config's)."""
        name = unique_name(prefix, str(memory_mb))
        self.sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": model,
                    "ServerlessConfig": {"MemorySizeInMB": memory_mb, "MaxConcurrency": max_concurrency},
                }
            ],
            Tags=[{"Key": "coldbrew:tune", "Value": model}],
        )
        self.configs.append(name)
        self.sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        self.endpoints.append(name)
        return name

    def wait_in_service(self, name: str, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            described = self.sm.describe_endpoint(EndpointName=name)
            status = described["EndpointStatus"]
            if status == "InService":
                return
            if status == "Failed":
                raise RuntimeError(
                    f"endpoint {name} failed: {described.get('FailureReason', 'no reason given')}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"endpoint {name} is still {status} after {timeout_s:.0f} s")
            time.sleep(0.1)

    def cleanup(self) -> list[str]:
        """Delete every endpoint and config made (each once; errors reported, not raised)."""
        problems: list[str] = []
        while self.endpoints:
            name = self.endpoints.pop()
            try:
                self.sm.delete_endpoint(EndpointName=name)
                self._wait_gone(name)
            except Exception as exc:
                if not _is_missing(exc):
                    problems.append(f"endpoint {name}: {_describe(exc)}")
        while self.configs:
            name = self.configs.pop()
            try:
                self.sm.delete_endpoint_config(EndpointConfigName=name)
            except Exception as exc:
                if not _is_missing(exc):
                    problems.append(f"endpoint config {name}: {_describe(exc)}")
        return problems

    def cleanup_models(self) -> list[str]:
        """Delete the model copies made (after their endpoints are gone)."""
        problems: list[str] = []
        while self.models:
            name = self.models.pop()
            try:
                self.sm.delete_model(ModelName=name)
            except Exception as exc:
                if not _is_missing(exc):
                    problems.append(f"model {name}: {_describe(exc)}")
        return problems

    def _wait_gone(self, name: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.sm.describe_endpoint(EndpointName=name)
            except Exception as exc:
                if _is_missing(exc):
                    return
                raise
            time.sleep(0.1)


def _with_env(container: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    # DescribeModel answers with fields CreateModel does not take (ModelDataSource's resolved
    # forms aside, coldbrew answers with what it was given), so the container is copied as is.
    return {**container, "Environment": {**container.get("Environment", {}), **env}}


def _is_missing(exc: Exception) -> bool:
    text = str(exc)
    return "Could not find" in text or "does not exist" in text


def unique_name(prefix: str, label: str) -> str:
    """``<prefix>-<label>-<random>``, within SageMaker's 63 characters and its character set."""
    safe = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in prefix).strip("-") or "tune"
    suffix = f"-{label}-{uuid.uuid4().hex[:6]}"
    return (safe[: 63 - len(suffix)].rstrip("-") + suffix).lower()


def concurrency_levels(levels: Sequence[int]) -> list[int]:
    """Sorted and without repeats: each level is measured once, lowest first."""
    return sorted(set(levels))
