"""The endpoints page: one row per endpoint, a pure function of what was read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coldbrew.ui.config_view import VariantLine, is_async, variant_lines
from coldbrew.ui.latency import VariantWindow
from coldbrew.ui.live import BUSY, IDLE, STARTING, LiveState
from coldbrew.ui.periods import Window
from coldbrew.ui.reads import StoredEndpoint


@dataclass(frozen=True, slots=True)
class Costs:
    """One endpoint's cost over a period and what one always-on instance would have cost."""

    cost: float
    invocations: int
    instance_type: str | None = None
    instance_cost: float | None = None
    instance_hourly: float | None = None
    invocations_per_hour: float | None = None
    break_even_per_hour: float | None = None


def costs_by_endpoint(report: dict[str, Any]) -> dict[str, Costs]:
    """``cost_report``'s endpoints by lower-case name."""
    out = {}
    for e in report["Endpoints"]:
        alternative = e.get("InstanceAlternative") or {}
        out[e["EndpointName"].lower()] = Costs(
            cost=float(e["Cost"]),
            invocations=int(e["Invocations"]),
            instance_type=alternative.get("InstanceType"),
            instance_cost=alternative.get("Cost"),
            instance_hourly=alternative.get("HourlyPrice"),
            invocations_per_hour=e.get("InvocationsPerHour"),
            break_even_per_hour=e.get("BreakEvenInvocationsPerHour"),
        )
    return out


@dataclass(frozen=True, slots=True)
class EndpointRow:
    name: str
    status: str
    failure_reason: str | None
    asynchronous: bool
    variants: list[VariantLine]
    busy: int
    idle: int
    starting: int
    invocations: int
    """Over the last hour, all variants."""
    errors_4xx: int
    errors_5xx: int
    cold_starts: int
    p50_us: float | None
    p99_us: float | None
    latency_variant: str | None
    """The variant whose ModelLatency percentiles are shown: the busiest one (percentiles of
    different variants do not add up)."""
    cost_today: float | None
    cost_month: float | None
    instance_type: str | None
    """The cheapest instance type that could serve the same traffic (its memory fits)."""
    instance_cost_month: float | None


@dataclass(frozen=True, slots=True)
class EndpointsPage:
    rows: list[EndpointRow]
    window: Window
    currency: str
    price_note: str
    taken_at: float
    totals: dict[str, float] = field(default_factory=dict)


def endpoint_row(
    stored: StoredEndpoint,
    usage: list[VariantWindow],
    today: Costs | None,
    month: Costs | None,
    live: LiveState,
) -> EndpointRow:
    states = [e.state for v in live.of(stored.name) for e in v.environments]
    busiest = max(usage, key=lambda u: (u.invocations, u.variant), default=None)
    return EndpointRow(
        name=stored.name,
        status=stored.status,
        failure_reason=stored.failure_reason,
        asynchronous=is_async(stored.deployment),
        variants=variant_lines(stored.deployment, stored.summaries),
        busy=states.count(BUSY),
        idle=states.count(IDLE),
        starting=states.count(STARTING),
        invocations=sum(u.invocations for u in usage),
        errors_4xx=sum(u.errors_4xx for u in usage),
        errors_5xx=sum(u.errors_5xx for u in usage),
        cold_starts=sum(u.cold_starts for u in usage),
        p50_us=busiest.percentiles.get("p50") if busiest else None,
        p99_us=busiest.percentiles.get("p99") if busiest else None,
        latency_variant=busiest.variant if busiest else None,
        cost_today=today.cost if today else (0.0 if month is not None else None),
        cost_month=month.cost if month else None,
        instance_type=month.instance_type if month else None,
        instance_cost_month=month.instance_cost if month else None,
    )


def endpoints_page(
    stored: list[StoredEndpoint],
    usage: list[VariantWindow],
    today: dict[str, Costs],
    month: dict[str, Costs],
    live: LiveState,
    window: Window,
    currency: str,
    price_note: str,
) -> EndpointsPage:
    by_endpoint: dict[str, list[VariantWindow]] = {}
    for u in usage:
        by_endpoint.setdefault(u.endpoint.lower(), []).append(u)
    rows = [
        endpoint_row(
            s, by_endpoint.get(s.name.lower(), []), today.get(s.name.lower()), month.get(s.name.lower()), live
        )
        for s in stored
    ]
    totals = {
        "endpoints": len(rows),
        "environments": sum(r.busy + r.idle + r.starting for r in rows),
        "invocations": sum(r.invocations for r in rows),
        "errors": sum(r.errors_4xx + r.errors_5xx for r in rows),
        "cost_today": sum(r.cost_today or 0.0 for r in rows),
        "cost_month": sum(r.cost_month or 0.0 for r in rows),
    }
    return EndpointsPage(rows, window, currency, price_note, live.taken_at, totals)
