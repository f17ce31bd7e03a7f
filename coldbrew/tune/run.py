"""A whole tune run: each memory size deployed, measured, metered and priced, then cleaned up."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from coldbrew.metering.prices import PriceTable
from coldbrew.tune.measure import (
    IDLE_TIMEOUT_S,
    Deployments,
    LevelResult,
    Payload,
    Progress,
    Workers,
    concurrency_levels,
    invoke_once,
    measure_level,
)
from coldbrew.tune.meter import MeterFigures
from coldbrew.tune.pricing import Candidate, Pricing, Recommendation, price_serverless, recommend
from coldbrew.tune.sizing import threads_at


@dataclass
class ConfigResult:
    """Everything measured and priced for one memory size."""

    memory_mb: int
    endpoint: str
    threads: int
    """Numerical-library threads the server gives an environment of this size (on this machine)."""
    cold_start_ms: float | None = None
    """The first invocation after the endpoint went InService (it starts with no environment)."""
    cold_start_error: str | None = None
    scaled_to_zero: bool | None = None
    """Whether the meter showed the endpoint with no environment before the cold start (None: the
    meter could not be read, and tune waited the idle timeout out instead)."""
    cold_start_metered: bool | None = None
    """Whether the meter counted that first invocation as a cold start (ColdStarts rose)."""
    levels: list[LevelResult] = field(default_factory=list)
    sent: int = 0
    """Every invocation sent to the endpoint: cold start, warm-ups and measured ones."""
    errors: int = 0
    """Failed invocations among ``sent``."""
    meter: MeterFigures | None = None
    billed_ms_per_invocation: float | None = None
    billing_source: str = "none"
    """"meter" (the server's billed GB-seconds) or "client" (measured latency, rounded up to 1 ms)."""
    pricing: Pricing | None = None
    failure: str | None = None
    """Why this size could not be measured (deployment failed), if it could not."""

    @property
    def warm_p99_ms(self) -> float | None:
        """The worst warm p99 over the concurrency levels: a size qualifies only at all of them."""
        p99s = [level.latency.p99_ms for level in self.levels if level.latency is not None]
        return max(p99s) if p99s else None

    def candidate(self) -> Candidate:
        return Candidate(
            memory_mb=self.memory_mb,
            p99_ms=self.warm_p99_ms,
            cost_per_million=None if self.pricing is None else self.pricing.cost_per_million,
            errors=self.errors + (1 if self.failure else 0),
        )


@dataclass
class TuneResult:
    model: str
    memory_sizes: list[int]
    concurrency: list[int]
    invocations: int
    latency_target_ms: float | None
    monthly_invocations: float
    payload_bytes: int
    content_type: str
    configs: list[ConfigResult]
    recommendation: Recommendation
    notes: list[str]
    cleanup_problems: list[str]
    price_region: str
    price_date: str
    currency: str


def wait_scaled_to_zero(
    read_meter: Callable[[str], MeterFigures | None], endpoint: str, timeout_s: float
) -> MeterFigures | None:
    """Wait until the meter shows ``endpoint`` with no environment; its figures then (None if the
    meter cannot be read: then the idle timeout and a margin are waited out)."""
    deadline = time.monotonic() + timeout_s
    # The load check's environment cannot be released sooner; and by then the meter has sampled it
    # (twice a second), so a zero afterwards means released, not "not seen yet".
    time.sleep(IDLE_TIMEOUT_S)
    figures = read_meter(endpoint)
    if figures is None:
        time.sleep(2)
        return None
    # Twice in a row: the gauge is sampled, and an environment just started may not be in it yet.
    zero_once = False
    while time.monotonic() < deadline:
        figures = read_meter(endpoint)
        if figures is not None and figures.environments == 0:
            if zero_once:
                return figures
            zero_once = True
        else:
            zero_once = False
        time.sleep(0.5)
    return figures


def measure_config(
    deployments: Deployments,
    read_meter: Callable[[str], MeterFigures | None],
    runtime: Any,
    model: str,
    memory_mb: int,
    levels: Sequence[int],
    invocations: int,
    payload: Payload,
    prefix: str,
    workers: Workers,
    progress: Progress,
) -> ConfigResult:
    endpoint = deployments.deploy(model, memory_mb, max(levels), prefix)
    result = ConfigResult(memory_mb=memory_mb, endpoint=endpoint, threads=threads_at(memory_mb))
    progress(f"{endpoint}: waiting for InService", 0)
    try:
        deployments.wait_in_service(endpoint)
    except RuntimeError as exc:
        result.failure = str(exc)
        return result
    # Cold start: deploy leaves the load check's environment warm; tune's model copy releases it
    # after IDLE_TIMEOUT_S, and the first invocation after that starts a new one.
    progress(f"{endpoint}: waiting for scale to zero", 0)
    before = wait_scaled_to_zero(read_meter, endpoint, IDLE_TIMEOUT_S + 30)
    result.scaled_to_zero = None if before is None else before.environments == 0
    progress(f"{endpoint}: cold start", 0)
    first = invoke_once(runtime, endpoint, payload)
    result.sent += 1
    after = read_meter(endpoint)
    if before is not None and after is not None:
        result.cold_start_metered = after.cold_starts == before.cold_starts + 1
    if first.ok:
        result.cold_start_ms = first.latency_ms
    else:
        result.errors += 1
        result.cold_start_error = first.error
    for concurrency in levels:
        level = measure_level(runtime, endpoint, payload, concurrency, invocations, workers, progress)
        result.levels.append(level)
        result.sent += level.sent + level.warmup_sent
        result.errors += level.errors + level.warmup_errors
    return result


def price_config(
    result: ConfigResult, meter: MeterFigures | None, payload: Payload, prices: PriceTable, monthly: float
) -> None:
    """Price ``result`` by what the server billed when its meter could be read, else by the
    latencies measured here (which include the network and gateway, so they overstate it)."""
    result.meter = meter
    if meter is not None and meter.invocations > 0:
        memory_gb = result.memory_mb / 1024
        result.billed_ms_per_invocation = meter.billed_gb_seconds * 1000 / memory_gb / meter.invocations
        result.billing_source = "meter"
        bytes_in = meter.bytes_in / meter.invocations
        bytes_out = meter.bytes_out / meter.invocations
    else:
        measured = [level.latency for level in result.levels if level.latency is not None]
        count = sum(m.count for m in measured)
        if count == 0:
            return
        mean = sum(m.mean_ms * m.count for m in measured) / count
        result.billed_ms_per_invocation = float(math.ceil(mean))
        result.billing_source = "client"
        bytes_in, bytes_out = float(len(payload.body)), 0.0
    result.pricing = price_serverless(
        result.memory_mb, result.billed_ms_per_invocation, bytes_in, bytes_out, prices, monthly
    )


def cold_start_note(configs: Sequence[ConfigResult]) -> str:
    """How the cold start was measured, and whether the meter confirms it for each size."""
    confirmed = [c.memory_mb for c in configs if c.cold_start_metered]
    unconfirmed = [c.memory_mb for c in configs if c.cold_start_ms is not None and not c.cold_start_metered]
    text = (
        "Cold start: the first invocation after the endpoint scaled to zero. tune deploys a copy of "
        f"the model with COLDBREW_IDLE_TIMEOUT_S={IDLE_TIMEOUT_S:g} (deploy's load check leaves one "
        "environment warm) and waits until the meter shows the endpoint with no environment."
    )
    if confirmed:
        text += f" The meter counted it as a cold start at {', '.join(f'{m:,}' for m in confirmed)} MB."
    if unconfirmed:
        text += (
            f" At {', '.join(f'{m:,}' for m in unconfirmed)} MB the meter did not confirm it (unreadable, "
            "or the endpoint still held an environment): that figure may be a warm invocation."
        )
    return text


def tune(
    sm: Any,
    runtime: Any,
    read_meter: Callable[[str], MeterFigures | None],
    model: str,
    memory_sizes: Sequence[int],
    concurrency: Sequence[int],
    invocations: int,
    payload: Payload,
    prices: PriceTable,
    monthly_invocations: float,
    latency_target_ms: float | None,
    progress: Progress,
    notes: Callable[[list[ConfigResult]], list[str]],
) -> TuneResult:
    """Measure ``model`` at each memory size; every endpoint made is deleted before this returns
    or raises (Ctrl-C included)."""
    levels = concurrency_levels(concurrency)
    deployments = Deployments(sm)
    configs: list[ConfigResult] = []
    cleanup_problems: list[str] = []
    workers = Workers(ThreadPoolExecutor(max_workers=max(levels), thread_name_prefix="coldbrew-tune"))
    try:
        # A missing model is one clear error (ValidationException) before anything is made.
        copy = deployments.copy_model(model, f"{model}-tune")
        for memory_mb in memory_sizes:
            result = measure_config(
                deployments,
                read_meter,
                runtime,
                copy,
                memory_mb,
                levels,
                invocations,
                payload,
                f"{model}-tune",
                workers,
                progress,
            )
            configs.append(result)
            price_config(result, read_meter(result.endpoint), payload, prices, monthly_invocations)
            # Delete as we go: an endpoint left idle would hold its environments' memory while the
            # next size is measured, and each size should have the machine to itself.
            cleanup_problems.extend(deployments.cleanup())
    finally:
        # The workers send no more (Ctrl-C, an error); those in flight finish on their own.
        workers.stop.set()
        workers.pool.shutdown(wait=False, cancel_futures=True)
        cleanup_problems.extend(deployments.cleanup())
        cleanup_problems.extend(deployments.cleanup_models())
    return TuneResult(
        model=model,
        memory_sizes=list(memory_sizes),
        concurrency=levels,
        invocations=invocations,
        latency_target_ms=latency_target_ms,
        monthly_invocations=monthly_invocations,
        payload_bytes=len(payload.body),
        content_type=payload.content_type,
        configs=configs,
        recommendation=recommend([c.candidate() for c in configs], latency_target_ms),
        notes=[*notes(configs), cold_start_note(configs)],
        cleanup_problems=cleanup_problems,
        price_region=prices.region,
        price_date=prices.date,
        currency=prices.currency,
    )
