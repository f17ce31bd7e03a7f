"""How numbers read on the pages (Jinja filters). The raw value always goes in a ``data-value``
attribute next to its text, so scripts and tests compare numbers, not renderings."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, is_dataclass
from typing import Any


def ms(us: float | None) -> str:
    """Microseconds (CloudWatch's latency unit) as milliseconds."""
    if us is None:
        return "-"
    value = us / 1000
    return f"{value:,.1f}" if value >= 100 else f"{value:,.2f}"


def money(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    # A serverless invocation costs millionths of a dollar: say that it is not nothing.
    return "<0.0001" if value < 0.00005 else f"{value:,.4f}"


def count(value: float | int | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def mib(value: float | int | None) -> str:
    return "-" if value is None else f"{value / 1024 / 1024:,.0f} MiB"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.0f} s"
    if value < 3600:
        return f"{value // 60:.0f} min {value % 60:.0f} s"
    return f"{value // 3600:.0f} h {value % 3600 // 60:.0f} min"


def utc(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_ms(epoch_ms: int) -> str:
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC).strftime("%H:%M:%S.%f")[:-3]


def plain(value: Any) -> Any:
    """A view (dataclasses, lists, dicts) as JSON-ready values."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def to_json(value: Any) -> str:
    return json.dumps(plain(value), separators=(",", ":"), allow_nan=False, default=str)


FILTERS = {
    "ms": ms,
    "money": money,
    "count": count,
    "mib": mib,
    "seconds": seconds,
    "utc": utc,
    "utc_ms": utc_ms,
}
