"""The time windows the pages speak of, in whole minutes (the meter's resolution)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

DAY_S = 86400


@dataclass(frozen=True, slots=True)
class Window:
    start: int
    """Unix seconds, a whole minute."""
    end: int
    """Exclusive; a whole minute."""

    @property
    def seconds(self) -> int:
        return self.end - self.start


def last_hour(now: float) -> Window:
    """The 60 minutes up to and including the current one: what GetMetricStatistics answers for
    StartTime=start, EndTime=end, Period=3600, so the page and the API can be compared."""
    end = int(now // 60 * 60) + 60
    return Window(end - 3600, end)


def today_start(now: float) -> float:
    """00:00 UTC today, as ``coldbrew cost`` counts a day."""
    return float(int(now // DAY_S * DAY_S))


def month_start(now: float) -> float:
    """The first of this month, 00:00 UTC."""
    day = dt.datetime.fromtimestamp(now, dt.UTC)
    return dt.datetime(day.year, day.month, 1, tzinfo=dt.UTC).timestamp()


@dataclass(frozen=True, slots=True)
class ChartRange:
    name: str
    seconds: int
    period: int
    """CloudWatch period of each point: at most a few hundred points per chart."""


RANGES: dict[str, ChartRange] = {
    "1h": ChartRange("1h", 3600, 60),
    "24h": ChartRange("24h", DAY_S, 300),
    "7d": ChartRange("7d", 7 * DAY_S, 3600),
}


def chart_window(range_: ChartRange, now: float) -> Window:
    """The range's periods, the last one holding the current minute."""
    end = (int(now // 60 * 60) + 60 + range_.period - 1) // range_.period * range_.period
    return Window(end - range_.seconds, end)
