"""Cost today and this month for every endpoint, without re-reading the month on every page load.

``cost_report`` sums every metered minute of its period, so pricing "this month" reads up to a
month of rows. Its figures are sums over minutes plus terms linear in hours (instances and
ProvisionedConcurrency existing), so they split at any instant: what [month start, hour start)
cost is the month's report minus the hour's, both taken at the same moment, and it does not change
once that hour is over. So the closed part is priced once an hour (three reports) and each page
load reads only the current hour (one report) and adds it. The always-on alternative's cost is
priced here from the hours the endpoint existed, as ``cost_report`` prices it, since an endpoint
with no rows in the current hour still existed through it.

The closed part is taken again when the hour changes (a few minutes after, so the meter's last
writes to the hour before are in) or when any endpoint is created, changed or deleted (the report
prices instances by the current configuration).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coldbrew.metering.cost import breakeven_per_hour
from coldbrew.metering.prices import PriceTable
from coldbrew.metering.query import cost_report
from coldbrew.ui.endpoints_view import Costs
from coldbrew.ui.periods import month_start, today_start
from coldbrew.ui.reads import StoredEndpoint

SETTLE_S = 180
"""After an hour ends, how long it may still receive meter rows (an invocation runs up to 60 s
and is recorded in the minute it started, then flushed within a second)."""

Report = Callable[[sqlite3.Connection, float, float], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Parts:
    """The additive parts of one endpoint's cost over a period."""

    cost: float = 0.0
    serverless_cost: float = 0.0
    invocations: int = 0
    serverless_invocations: int = 0
    largest_memory: int = 0
    """Of its serverless variants with rows in the period: what the instance alternative must hold."""
    hours: float = 0.0

    def __add__(self, other: Parts) -> Parts:
        return Parts(
            self.cost + other.cost,
            self.serverless_cost + other.serverless_cost,
            self.invocations + other.invocations,
            self.serverless_invocations + other.serverless_invocations,
            max(self.largest_memory, other.largest_memory),
            self.hours + other.hours,
        )

    def __sub__(self, other: Parts) -> Parts:
        return Parts(
            self.cost - other.cost,
            self.serverless_cost - other.serverless_cost,
            self.invocations - other.invocations,
            self.serverless_invocations - other.serverless_invocations,
            self.largest_memory,
            self.hours - other.hours,
        )


def parts(report: dict[str, Any]) -> dict[str, Parts]:
    out = {}
    for e in report["Endpoints"]:
        serverless = [v for v in e["Variants"] if v["Kind"] == "serverless"]
        out[e["EndpointName"].lower()] = Parts(
            cost=float(e["Cost"]),
            serverless_cost=sum(float(v["Cost"]) for v in serverless),
            invocations=int(e["Invocations"]),
            serverless_invocations=sum(int(v["Invocations"]) for v in serverless),
            largest_memory=max((int(v["MemorySizeInMB"]) for v in serverless), default=0),
            hours=float(e["Hours"]),
        )
    return out


def _combine(closed: dict[str, Parts], fresh: dict[str, Parts]) -> dict[str, Parts]:
    return {k: closed.get(k, Parts()) + fresh.get(k, Parts()) for k in closed.keys() | fresh.keys()}


def costs(
    total: dict[str, Parts],
    created: dict[str, float],
    since: float,
    now: float,
    prices: PriceTable,
    smallest: Callable[[int], str] | None = None,
) -> dict[str, Costs]:
    """``Costs`` as ``costs_by_endpoint(cost_report(since, now))`` gives them. ``smallest``: the
    cheapest instance type for a memory size (``prices.smallest_instance``, memoised)."""
    smallest = smallest or prices.smallest_instance
    out = {}
    for key, p in total.items():
        alternative: dict[str, Any] = {}
        if p.largest_memory:
            # As cost_report: the hours the endpoint existed in the period (from its rows if deleted).
            hours = max(0.0, now - max(created[key], since)) / 3600 if key in created else p.hours
            itype = smallest(p.largest_memory)
            hourly = prices.instance_hourly(itype)
            per_invocation = p.serverless_cost / p.serverless_invocations if p.serverless_invocations else 0.0
            alternative = {
                "instance_type": itype,
                "instance_cost": hourly * hours,
                "instance_hourly": hourly,
                "invocations_per_hour": p.serverless_invocations / hours if hours > 0 else None,
                "break_even_per_hour": breakeven_per_hour(hourly, per_invocation),
            }
        out[key] = Costs(cost=p.cost, invocations=p.invocations, **alternative)
    return out


@dataclass(frozen=True)
class _Closed:
    key: tuple[object, ...]
    month: dict[str, Parts]
    today: dict[str, Parts]


class CostCache:
    """Today's and this month's costs per endpoint; safe to call from several threads."""

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices
        self._smallest: dict[int, str] = {}
        self._closed: _Closed | None = None
        self._lock = threading.Lock()

    def _report(self, conn: sqlite3.Connection, since: float, now: float) -> dict[str, Parts]:
        return parts(cost_report(conn, self.prices, None, since, now))

    def today_and_month(
        self, conn: sqlite3.Connection, stored: list[StoredEndpoint], now: float
    ) -> tuple[dict[str, Costs], dict[str, Costs]]:
        today, month = today_start(now), month_start(now)
        hour = float(int((now - SETTLE_S) // 3600 * 3600))
        created = {s.name.lower(): s.created_at for s in stored}
        if hour <= today:
            # Early in the day (or month) the current period is all there is: no split.
            today_parts, month_parts = self._report(conn, today, now), self._report(conn, month, now)
        else:
            key = (hour, tuple((s.name, s.created_at, s.modified_at, s.status) for s in stored))
            closed = self._closed
            if closed is None or closed.key != key:
                with self._lock:
                    closed = self._closed
                    if closed is None or closed.key != key:
                        closed = self._close(conn, key, month, today, hour, now)
                        self._closed = closed
            fresh = self._report(conn, hour, now)
            today_parts, month_parts = _combine(closed.today, fresh), _combine(closed.month, fresh)
        return (
            costs(today_parts, created, today, now, self.prices, self.smallest),
            costs(month_parts, created, month, now, self.prices, self.smallest),
        )

    def smallest(self, memory_mb: int) -> str:
        found = self._smallest.get(memory_mb)
        if found is None:
            found = self._smallest[memory_mb] = self.prices.smallest_instance(memory_mb)
        return found

    def _close(
        self,
        conn: sqlite3.Connection,
        key: tuple[object, ...],
        month: float,
        today: float,
        hour: float,
        at: float,
    ) -> _Closed:
        # Three reports at one instant: their differences are [month, hour) and [today, hour).
        whole, day, current = (
            self._report(conn, month, at),
            self._report(conn, today, at),
            self._report(conn, hour, at),
        )
        minus = {k: whole[k] - current.get(k, Parts()) for k in whole}
        today_minus = {k: day[k] - current.get(k, Parts()) for k in day}
        return _Closed(key, minus, today_minus)
