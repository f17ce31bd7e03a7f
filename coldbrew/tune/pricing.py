"""Pricing a measured configuration and recommending one: pure functions of figures and prices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coldbrew.metering.cost import Usage, serverless_cost
from coldbrew.metering.prices import PriceTable


@dataclass(frozen=True)
class Pricing:
    cost_per_invocation: float
    cost_per_million: float
    monthly_cost: float
    """At the rate asked for (invocations a month)."""
    monthly_invocations: float


def price_serverless(
    memory_mb: int,
    billed_ms_per_invocation: float,
    bytes_in_per_invocation: float,
    bytes_out_per_invocation: float,
    prices: PriceTable,
    monthly_invocations: float,
) -> Pricing:
    """What one invocation costs on a serverless endpoint of ``memory_mb``, by coldbrew's price
    table: duration x memory by the GB-second, plus data processed in and out.

    The per-invocation figures are averages over what was measured; the cost is linear in them, so
    the average invocation's cost is the mean cost. SageMaker Serverless has no per-request price
    (Lambda does); the table's ``sagemaker_serverless`` section has none, so none is added.
    """
    # Priced through the same function as ``coldbrew cost``, on a million average invocations
    # (rounding the bytes: Usage counts whole bytes, and a million of them makes that exact enough).
    million = 1_000_000
    usage = Usage(
        invocations=million,
        gb_seconds=memory_mb / 1024 * billed_ms_per_invocation / 1000 * million,
        bytes_in=round(bytes_in_per_invocation * million),
        bytes_out=round(bytes_out_per_invocation * million),
    )
    per_million = serverless_cost(usage, prices)
    per_invocation = per_million / million
    return Pricing(
        cost_per_invocation=per_invocation,
        cost_per_million=per_million,
        monthly_cost=per_invocation * monthly_invocations,
        monthly_invocations=monthly_invocations,
    )


@dataclass(frozen=True)
class Candidate:
    """What the recommendation weighs of one measured configuration."""

    memory_mb: int
    p99_ms: float | None
    """Warm p99 (the worst over the concurrency levels measured); None if nothing succeeded."""
    cost_per_million: float | None
    errors: int


@dataclass(frozen=True)
class Recommendation:
    memory_mb: int | None
    """None when no configuration qualifies."""
    reason: str


def recommend(candidates: Sequence[Candidate], latency_target_ms: float | None) -> Recommendation:
    """The cheapest configuration whose p99 meets the target, with no errors.

    Errors disqualify: a size that fails requests (out of memory, timeouts) is not a saving. Ties in
    cost go to the lower p99, then the smaller memory size. Without a target, the cheapest.
    """
    usable = [
        c for c in candidates if c.errors == 0 and c.p99_ms is not None and c.cost_per_million is not None
    ]
    if latency_target_ms is not None:
        meeting = [c for c in usable if c.p99_ms is not None and c.p99_ms <= latency_target_ms]
    else:
        meeting = usable
    if not meeting:
        if not candidates:
            return Recommendation(None, "no configuration was measured")
        if not usable:
            return Recommendation(None, "every configuration had errors or no successful invocation")
        best = min(c.p99_ms for c in usable if c.p99_ms is not None)
        return Recommendation(
            None,
            f"no configuration meets the p99 target of {latency_target_ms:g} ms "
            f"(the best p99 measured is {best:.1f} ms)",
        )
    chosen = min(meeting, key=lambda c: (c.cost_per_million, c.p99_ms, c.memory_mb))
    if latency_target_ms is None:
        why = "the cheapest configuration without errors (no --latency-target-ms given)"
    else:
        why = (
            f"the cheapest configuration with p99 {chosen.p99_ms:.1f} ms <= {latency_target_ms:g} ms "
            "and no errors"
        )
    return Recommendation(chosen.memory_mb, f"{chosen.memory_mb} MB: {why}")
