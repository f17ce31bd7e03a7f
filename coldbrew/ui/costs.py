"""Cost today and this month for every endpoint, and the cost page's days, without re-reading the
month on every page load.

``cost_report`` sums every metered minute of its period, so pricing "this month" reads up to a
month of rows. Its figures are sums over minutes plus terms linear in hours (instances and
ProvisionedConcurrency existing), so they split at any instant: what [month start, hour start)
cost is the month's report minus the hour's, both taken at the same moment, and it does not change
once that hour is over, unless the meter writes to one of its minutes again (an asynchronous
invocation is recorded in the minute it started): the meter's MinuteLog says so, and the closed part
is taken again. So the closed part is priced once (three reports), each hour that ends is added to
it from the minutes in memory (:class:`~coldbrew.ui.minutes.MinuteCache`), and each page load
prices only the current hour, from those minutes, pricing again only the endpoints whose minutes
changed or whose cost grows with the clock. The always-on alternative's cost is priced here from the
hours the endpoint existed, as ``cost_report`` prices it, since an endpoint with no rows in the
current hour still existed through it.

Any change to an endpoint (created, updated, deleted) prices the closed part again: the report
prices instances by the current configuration.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from coldbrew.metering.cost import breakeven_per_hour
from coldbrew.metering.prices import PriceTable
from coldbrew.metering.query import USAGE_COLUMNS, cost_report, price_usage
from coldbrew.metering.written import MinuteLog
from coldbrew.ui.endpoints_view import Costs
from coldbrew.ui.minutes import MinuteCache, Span
from coldbrew.ui.periods import month_start, today_start
from coldbrew.ui.reads import StoredEndpoint

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
    config: tuple[object, ...]
    """The endpoints' configurations it was priced with (cost_report prices instances by the
    current one, so a change re-prices the past)."""
    version: int
    """The meter's MinuteLog version before it was read: a later write before ``hour`` voids it."""
    hour: float
    today: float
    month: float
    month_parts: dict[str, Parts]
    """[month, hour)"""
    today_parts: dict[str, Parts]
    """[today, hour)"""


FOREVER = 2**62
MAX_GAP_S = 3 * 3600
"""Hours ended since the last load that are priced from minutes in memory; more are read as sums."""


class CostCache:
    """Today's and this month's costs per endpoint; safe to call from several threads.

    [month, hour) and [today, hour) are kept; the current hour is priced on each load from the
    minutes in memory (:class:`MinuteCache`: only what the meter wrote since is read). When the hour
    changes, the hour that ended is added to what is kept, priced from the same minutes.
    """

    def __init__(self, prices: PriceTable, minutes: MinuteCache) -> None:
        self.prices = prices
        self.minutes = minutes
        self._smallest: dict[int, str] = {}
        self._closed: _Closed | None = None
        self._hour_memo: dict[str, tuple[list[dict[str, Any]], Parts]] = {}
        """The current hour's parts by endpoint, with the usage rows they were priced from."""
        self._hour_memo_key: tuple[object, ...] = ()
        self._lock = threading.Lock()

    def _report(self, conn: sqlite3.Connection, since: float, now: float) -> dict[str, Parts]:
        return parts(cost_report(conn, self.prices, None, since, now))

    def _priced(
        self, conn: sqlite3.Connection, stored: dict[str, dict[str, Any]], since: float, now: float
    ) -> dict[str, Parts]:
        """``_report`` from the minutes in memory: the same pricing, without reading the store."""
        span = self.minutes.span(conn, int(since // 60 * 60), FOREVER)
        return parts(price_usage(usage_of(span), stored, self.prices, None, since, now))

    def _current_hour(
        self,
        conn: sqlite3.Connection,
        stored: list[StoredEndpoint],
        rows: dict[str, dict[str, Any]],
        hour: float,
        now: float,
    ) -> dict[str, Parts]:
        """``_priced(hour, now)``, pricing again only endpoints whose minutes changed or whose cost
        grows with time (instances, ProvisionedConcurrency): a serverless endpoint's cost is its
        usage's, and only its hours move with the clock."""
        span = self.minutes.span(conn, int(hour), FOREVER)
        usage: dict[str, list[dict[str, Any]]] = {}
        for row in usage_of(span):
            usage.setdefault(row["endpoint"].lower(), []).append(row)
        config = tuple((s.name, s.created_at, s.modified_at, s.status) for s in stored)
        memo = self._hour_memo if self._hour_memo_key == (hour, config) else {}
        timeless = {s.name.lower() for s in stored if _serverless_only(s.deployment)}
        out: dict[str, Parts] = {}
        again: list[dict[str, Any]] = []
        for key, lines in usage.items():
            found = memo.get(key)
            serverless = all(line["serverless"] for line in lines)
            if key in timeless and serverless and found is not None and found[0] == lines:
                start = max(rows[key]["created_at"], hour)
                out[key] = replace(found[1], hours=max(0.0, now - start) / 3600)
            else:
                again.extend(lines)
        priced = parts(price_usage(again, rows, self.prices, None, hour, now))
        out.update(priced)
        self._hour_memo = {k: (usage[k], out[k]) for k in usage if k in out}
        self._hour_memo_key = (hour, config)
        return out

    def today_and_month(
        self, conn: sqlite3.Connection, stored: list[StoredEndpoint], now: float
    ) -> tuple[dict[str, Costs], dict[str, Costs]]:
        today, month = today_start(now), month_start(now)
        hour = float(int(now // 3600 * 3600))
        created = {s.name.lower(): s.created_at for s in stored}
        rows = {s.name.lower(): {"created_at": s.created_at, "deployment": s.deployment} for s in stored}
        config = tuple((s.name, s.created_at, s.modified_at, s.status) for s in stored)
        with self._lock:
            closed = self._closed_until(conn, rows, config, hour, today, month, now)
            fresh = self._current_hour(conn, stored, rows, hour, now)
        today_parts, month_parts = _combine(closed.today_parts, fresh), _combine(closed.month_parts, fresh)
        return (
            costs(today_parts, created, today, now, self.prices, self.smallest),
            costs(month_parts, created, month, now, self.prices, self.smallest),
        )

    def _closed_until(
        self,
        conn: sqlite3.Connection,
        rows: dict[str, dict[str, Any]],
        config: tuple[object, ...],
        hour: float,
        today: float,
        month: float,
        now: float,
    ) -> _Closed:
        closed = self._closed
        version = self.minutes.log.version
        if closed is not None and closed.config == config:
            _, changed = self.minutes.log.since(closed.version)
            # Hours in memory only if they are few: after a long gap the store's sums are cheaper.
            recent = hour - closed.hour <= MAX_GAP_S
            if recent and changed is not None and not any(m < closed.hour for m in changed):
                if closed.hour == hour:
                    return closed
                # The hours since, priced from the minutes in memory at one instant: [a, b) is
                # what was used from a on less what was used from b on.
                after = self._priced(conn, rows, hour, now)

                def since(start: float, kept: dict[str, Parts]) -> dict[str, Parts]:
                    return _combine(kept, _minus(self._priced(conn, rows, start, now), after))

                month_parts = (
                    since(closed.hour, closed.month_parts) if closed.month == month else since(month, {})
                )
                today_parts = (
                    since(closed.hour, closed.today_parts) if closed.today == today else since(today, {})
                )
                self._closed = _Closed(config, version, hour, today, month, month_parts, today_parts)
                self.minutes.forget_before(int(hour) - 3600)
                return self._closed
        # Three reports at one instant: their differences are [month, hour) and [today, hour).
        whole, day, current = (
            self._report(conn, month, now),
            self._report(conn, today, now),
            self._report(conn, hour, now),
        )
        self._closed = _Closed(
            config, version, hour, today, month, _minus(whole, current), _minus(day, current)
        )
        self.minutes.forget_before(int(hour) - 3600)
        return self._closed

    def smallest(self, memory_mb: int) -> str:
        found = self._smallest.get(memory_mb)
        if found is None:
            found = self._smallest[memory_mb] = self.prices.smallest_instance(memory_mb)
        return found


def _serverless_only(deployment: dict[str, Any]) -> bool:
    """Serverless variants without ProvisionedConcurrency only: nothing of it is priced by time."""
    variants = deployment.get("Config", {}).get("ProductionVariants", [])
    return bool(variants) and all(
        v.get("ServerlessConfig") and not int(v["ServerlessConfig"].get("ProvisionedConcurrency") or 0)
        for v in variants
    )


def _minus(a: dict[str, Parts], b: dict[str, Parts]) -> dict[str, Parts]:
    return {k: a[k] - b.get(k, Parts()) for k in a}


def usage_of(span: Span) -> list[dict[str, Any]]:
    """The span's variants as ``usage_rows`` gives them (USAGE_COLUMNS, in its order)."""
    counts, usage = span.counts.tolist(), span.usage.tolist()
    serverless, memory, first = span.serverless.tolist(), span.memory_mb.tolist(), span.first_minute.tolist()
    out = []
    for i, (endpoint, variant) in enumerate(span.keys):
        cold, billed, bytes_in, bytes_out, sampled, held = usage[i]
        out.append(
            {
                "endpoint": endpoint,
                "variant": variant,
                "serverless": serverless[i],
                "memory_mb": memory[i],
                "invocations": counts[i][0],
                "billed_mb_ms": billed,
                "bytes_in": int(bytes_in),
                "bytes_out": int(bytes_out),
                "cold_starts": int(cold),
                "first_minute": first[i],
                "sampled_minutes": int(sampled),
                "held_mb_s": held,
            }
        )
    out.sort(key=lambda r: (r["endpoint"], r["variant"]))
    return out


@dataclass(frozen=True)
class _Days:
    key: tuple[object, ...]
    version: int
    costs: list[dict[str, float]]
    """Each closed day's cost by endpoint, oldest first."""


class DayCosts:
    """The cost page's closed days: each day's cost per endpoint, priced once (a day that ended
    changes only if the meter writes to it again, or an endpoint's configuration changes, since
    ``cost_report`` prices instances by the current one). Safe to call from several threads."""

    def __init__(self, prices: PriceTable, log: MinuteLog) -> None:
        self.prices, self.log = prices, log
        self._days: _Days | None = None
        self._lock = threading.Lock()

    def closed(
        self, conn: sqlite3.Connection, stored: list[StoredEndpoint], starts: list[float], now: float
    ) -> list[dict[str, float]]:
        """The cost of each day in ``starts`` but the last (today) by endpoint, as the difference of
        ``cost_report`` since its start and since the next day's, both at one instant."""
        config = tuple((s.name, s.created_at, s.modified_at, s.status) for s in stored)
        key = (tuple(starts), config)
        with self._lock:
            found = self._days
            if found is not None and found.key == key:
                _, changed = self.log.since(found.version)
                if changed is not None and not any(m < starts[-1] for m in changed):
                    return found.costs
            version = self.log.version
            rows = {s.name.lower(): {"created_at": s.created_at, "deployment": s.deployment} for s in stored}
            cumulative = [
                {k: p.cost for k, p in parts(price_usage(r, rows, self.prices, None, since, now)).items()}
                for since, r in zip(starts, _usage_since_each(conn, starts), strict=True)
            ]
            days = [
                {k: cost - cumulative[i + 1].get(k, 0.0) for k, cost in cumulative[i].items()}
                for i in range(len(starts) - 1)
            ]
            self._days = _Days(key, version, days)
            return days


def _usage_since_each(conn: sqlite3.Connection, starts: list[float]) -> list[list[dict[str, Any]]]:
    """``usage_rows(since=s)`` for each s in ``starts`` (ascending day starts), in one pass over the
    minutes: summed per day, then the days from each start on."""
    rows = conn.execute(
        "SELECT endpoint, variant, minute / 86400 * 86400 AS day, max(serverless), max(memory_mb), "
        "sum(invocations), sum(billed_mb_ms), sum(bytes_in), sum(bytes_out), sum(cold_starts), "
        "min(minute), sum(samples > 0), sum(held_mb_s) FROM meter_minutes WHERE minute >= ? "
        "GROUP BY endpoint, variant, day ORDER BY day DESC",
        [int(starts[0] // 60 * 60)],
    ).fetchall()
    totals: dict[tuple[str, str], list[Any]] = {}
    out: list[list[dict[str, Any]]] = []
    pending = list(rows)
    for since in reversed(starts):
        while pending and pending[0][2] >= since:
            endpoint, variant, _, serverless, memory, *sums, first, sampled, held = pending.pop(0)
            total = totals.get((endpoint, variant))
            if total is None:
                totals[(endpoint, variant)] = [serverless, memory, *sums, first, sampled, held]
            else:
                total[0], total[1] = max(total[0], serverless), max(total[1], memory)
                for i, value in enumerate(sums, start=2):
                    total[i] += value
                total[7] = min(total[7], first)
                total[8] += sampled
                total[9] += held
        out.append(
            [
                dict(zip(USAGE_COLUMNS, (endpoint, variant, *total), strict=True))
                for (endpoint, variant), total in sorted(totals.items())
            ]
        )
    return out[::-1]
