"""The cost page: each endpoint's cost per day, and serverless against its cheapest instance.

A day's cost is the difference of two ``cost_report`` answers, since the start of that day and
since the start of the next: the report prices serverless usage by the minutes in its period and
instances by the hours they existed in it, so the difference is exactly that day's, priced by the
same code as ``coldbrew cost`` and the endpoints page's "cost today".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from coldbrew.ui.endpoints_view import Costs


@dataclass(frozen=True, slots=True)
class CostRow:
    endpoint: str
    days: list[float]
    """Cost of each day in ``CostPage.days``, oldest first."""
    total: float
    month: Costs | None
    """Month to date, with the always-on alternative and the break-even rate."""

    @property
    def cheaper(self) -> str | None:
        """Which would have cost less this month: ``serverless`` or ``instance``."""
        if self.month is None or self.month.instance_cost is None:
            return None
        return "instance" if self.month.instance_cost < self.month.cost else "serverless"


@dataclass(frozen=True, slots=True)
class CostPage:
    days: list[str]
    """ISO dates (UTC), oldest first; the last is today."""
    rows: list[CostRow]
    day_totals: list[float]
    currency: str
    price_note: str
    idle_endpoints: int
    """Endpoints that cost nothing over the days shown (left out of ``rows``)."""


def cost_page(
    day_starts: list[float],
    cumulative: list[dict[str, Costs]],
    month: dict[str, Costs],
    endpoint_names: list[str],
    currency: str,
    price_note: str,
) -> CostPage:
    """``cumulative[i]``: costs since ``day_starts[i]`` until now, by lower-case endpoint name."""
    names = {n.lower(): n for n in endpoint_names}
    for report in cumulative:
        for key in report:
            names.setdefault(key, key)  # deleted since: its cost stays in the days it ran
    rows = []
    idle = 0
    for key in sorted(names):
        since = [report[key].cost if key in report else 0.0 for report in cumulative]
        days = [max(0.0, since[i] - (since[i + 1] if i + 1 < len(since) else 0.0)) for i in range(len(since))]
        if not any(days) and key not in month:
            idle += 1
            continue
        rows.append(CostRow(names[key], days, sum(days), month.get(key)))
    day_totals = [sum(r.days[i] for r in rows) for i in range(len(day_starts))]
    labels = [dt.datetime.fromtimestamp(t, dt.UTC).date().isoformat() for t in day_starts]
    return CostPage(labels, rows, day_totals, currency, price_note, idle)
