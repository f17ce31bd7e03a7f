"""GetMetricStatistics, GetMetricData and ListMetrics over the meter's store, validated as CloudWatch
validates them (its error codes and messages), whatever protocol the request came in.

Each operation takes the request as ``shapes.coerce`` left it (timestamps in Unix seconds) and
returns the output shape's value. The work one request may do is bounded: GetMetricStatistics by
CloudWatch's 1,440 datapoints, GetMetricData by MaxDatapoints and ``SCAN_BUDGET_MINUTES`` per page
(the rest comes with a NextToken), ListMetrics by 500 metrics a page.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from coldbrew.cloudwatch.errors import (
    CloudWatchError,
    InvalidNextToken,
    InvalidParameterCombination,
    InvalidParameterValue,
    MissingParameter,
    ValidationError,
)
from coldbrew.cloudwatch.shapes import service_model
from coldbrew.metering import statistics
from coldbrew.metering.statistics import Datapoint, Metric, Percentile, Series

STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
MAX_DATAPOINTS = 1440
"""GetMetricStatistics' limit."""
GET_METRIC_DATA_MAX_DATAPOINTS = 100_800
MAX_QUERIES = 500
LIST_PAGE = 500
SCAN_BUDGET_MINUTES = 2_000_000
"""Minutes of one variant's aggregates one GetMetricData page may read (about four years)."""
LIST_WINDOW_S = 14 * 86400
"""ListMetrics lists metrics with data in the last two weeks, as CloudWatch does."""
RECENTLY_ACTIVE_S = 3 * 3600

_PERCENTILE = re.compile(r"^p(\d{1,3}(?:\.\d{1,10})?)$")
_QUERY_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")


def _units() -> list[str]:
    return list(service_model().shape_for("StandardUnit").enum)


def _number(n: int) -> str:
    return f"{n:,}"


def percentile(name: str) -> Percentile | None:
    match = _PERCENTILE.match(name)
    if match is None:
        return None
    value = Fraction(match.group(1))
    if value > 100:
        return None
    return Percentile(name, value / 100)


def _round_start(start: float, now: float) -> int:
    """CloudWatch's rounding of StartTime: to the minute if less than 15 days ago, to 5 minutes if
    less than 63, else to the hour."""
    age = now - start
    step = 60 if age < 15 * 86400 else 300 if age < 63 * 86400 else 3600
    return int(start // step * step)


def _ceil_minute(t: float) -> int:
    return int(math.ceil(t / 60) * 60)


def _check_dimensions(dimensions: list[dict[str, Any]], path: str, limit: int, values: bool) -> None:
    if len(dimensions) > limit:
        raise InvalidParameterValue(f"The collection {path} must not have a size greater than {limit}.")
    for i, d in enumerate(dimensions, 1):
        name = d.get("Name")
        if name is None:
            raise MissingParameter(f"The parameter {path}.member.{i}.Name is required.")
        if not 1 <= len(name) <= 255:
            raise InvalidParameterValue(
                f"The parameter {path}.member.{i}.Name must be between 1 and 255 characters long."
            )
        value = d.get("Value")
        if value is None and values:
            raise MissingParameter(f"The parameter {path}.member.{i}.Value is required.")
        if value is not None and not 1 <= len(value) <= 1024:
            raise InvalidParameterValue(
                f"The parameter {path}.member.{i}.Value must be between 1 and 1024 characters long."
            )


def _check_name(value: str, path: str) -> None:
    if not 1 <= len(value) <= 255:
        raise InvalidParameterValue(f"The parameter {path} must be between 1 and 255 characters long.")


def _find(
    namespace: str, name: str, dimensions: list[dict[str, Any]], unit: str | None
) -> tuple[Metric, str, str | None] | None:
    """The served metric and (endpoint, variant) a request names exactly, as CloudWatch matches a
    metric: by namespace, name and the whole set of dimensions (and unit, if given). The variant
    is None for a metric of the endpoint (EndpointName its one dimension)."""
    metric = statistics.BY_NAME.get((namespace, name))
    if metric is None or (unit is not None and unit != metric.unit):
        return None
    names = [d["Name"] for d in dimensions]
    if sorted(names) != sorted(metric.dimensions):
        return None
    by_name = {d["Name"]: d["Value"] for d in dimensions}
    return metric, by_name["EndpointName"], by_name.get("VariantName")


# --- GetMetricStatistics ----------------------------------------------------------------------------


def get_metric_statistics(conn: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    _check_name(p["Namespace"], "Namespace")
    _check_name(p["MetricName"], "MetricName")
    dimensions = p.get("Dimensions", [])
    _check_dimensions(dimensions, "Dimensions", 30, values=True)
    period = p["Period"]
    _check_period(period, "Period", InvalidParameterValue)
    stats = p.get("Statistics") or []
    extended = p.get("ExtendedStatistics") or []
    if not stats and not extended:
        raise MissingParameter("Must specify either Statistics or ExtendedStatistics.")
    if stats and extended:
        raise InvalidParameterCombination(
            "Must specify either Statistics or ExtendedStatistics, but not both."
        )
    if len(stats) > 5:
        raise InvalidParameterValue("The collection Statistics must not have a size greater than 5.")
    if len(extended) > 10:
        raise InvalidParameterValue("The collection ExtendedStatistics must not have a size greater than 10.")
    for i, s in enumerate(stats, 1):
        if s not in STATISTICS:
            raise InvalidParameterValue(
                f"The parameter Statistics.member.{i} must be a value in the set [{', '.join(STATISTICS)}]."
            )
    percentiles = []
    for i, s in enumerate(extended, 1):
        parsed = percentile(s)
        if parsed is None:
            raise InvalidParameterValue(
                f"The parameter ExtendedStatistics.member.{i} must be a percentile between p0.0 and p100 "
                f"(pNN.NN); '{s[:40]}' is not one."
            )
        percentiles.append(parsed)
    unit = p.get("Unit")
    _check_unit(unit, "Unit", InvalidParameterValue)
    start, end = p["StartTime"], p["EndTime"]
    if start >= end:
        raise InvalidParameterValue("The parameter StartTime must be less than the parameter EndTime.")
    requested = int((end - start) // period)
    if requested > MAX_DATAPOINTS:
        raise InvalidParameterCombination(
            f"You have requested up to {_number(requested)} datapoints, which exceeds the limit of "
            f"{_number(MAX_DATAPOINTS)}. You may reduce the datapoints requested by increasing Period, "
            f"or decreasing the time range."
        )
    found = _find(p["Namespace"], p["MetricName"], dimensions, unit)
    if found is None:
        return {"Label": p["MetricName"], "Datapoints": []}
    metric, endpoint, variant = found
    series = Series(metric, endpoint, variant, _round_start(start, now), _ceil_minute(end), period)
    points = statistics.read(conn, series, percentiles)
    datapoints = []
    for point in points:
        out: dict[str, Any] = {"Timestamp": float(point.timestamp), "Unit": metric.unit}
        for s in stats:
            value = _statistic(point, s)
            if value is not None:
                out[s] = value
        if extended:
            out["ExtendedStatistics"] = {
                q.name: point.percentiles[q.name] for q in percentiles if q.name in point.percentiles
            }
        datapoints.append(out)
    return {"Label": p["MetricName"], "Datapoints": datapoints}


def _statistic(point: Datapoint, name: str) -> float | None:
    if name == "SampleCount":
        return point.sample_count
    if name == "Sum":
        return point.total
    if name == "Average":
        return point.average
    if name == "Minimum":
        return point.minimum
    if name == "Maximum":
        return point.maximum
    return point.percentiles.get(name)


def _check_period(period: int, path: str, error: type[CloudWatchError]) -> None:
    if period <= 0:
        raise error(f"The parameter {path} must be greater than 0.")
    if period % 60:
        raise error(
            f"The parameter {path} must be a multiple of 60. (SageMaker's endpoint metrics have "
            f"one-minute resolution.)"
        )


def _check_unit(unit: str | None, path: str, error: type[CloudWatchError]) -> None:
    if unit is not None and unit not in _units():
        raise error(f"The parameter {path} must be a value in the set [ {', '.join(_units())} ].")


# --- GetMetricData ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Query:
    id: str
    label: str
    series: Series | None
    """None: the metric does not exist (CloudWatch answers with no values, not an error)."""
    stat: str
    percentile: Percentile | None


def get_metric_data(conn: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    raw_queries = p["MetricDataQueries"]
    if not raw_queries:
        raise MissingParameter("The parameter MetricDataQueries is required.")
    if len(raw_queries) > MAX_QUERIES:
        raise ValidationError(
            f"The collection MetricDataQueries must not have a size greater than {MAX_QUERIES}."
        )
    start, end = p["StartTime"], p["EndTime"]
    if start >= end:
        raise ValidationError("The parameter StartTime must be less than the parameter EndTime.")
    scan = p.get("ScanBy", "TimestampDescending")
    if scan not in ("TimestampDescending", "TimestampAscending"):
        raise ValidationError(
            f"The value {scan[:40]} for parameter ScanBy is invalid: it must be TimestampDescending or "
            f"TimestampAscending."
        )
    max_points = p.get("MaxDatapoints", GET_METRIC_DATA_MAX_DATAPOINTS)
    if max_points <= 0:
        raise ValidationError("The parameter MaxDatapoints must be greater than 0.")
    max_points = min(max_points, GET_METRIC_DATA_MAX_DATAPOINTS)
    queries = _queries(raw_queries, _round_start(start, now), _ceil_minute(end))
    descending = scan == "TimestampDescending"
    fingerprint = _fingerprint({"q": raw_queries, "s": start, "e": end, "b": scan})
    first_query, cursor = 0, None
    if p.get("NextToken") is not None:
        first_query, cursor = _read_token(p["NextToken"], fingerprint, len(queries))

    results: list[dict[str, Any]] = []
    budget_points, budget_minutes = max_points, SCAN_BUDGET_MINUTES
    next_token = None
    for qi in range(first_query, len(queries)):
        q = queries[qi]
        if budget_points <= 0 or budget_minutes <= 0:
            next_token = _token(fingerprint, qi, None)
            break
        values, resume, budget_points, budget_minutes = _run(
            conn, q, cursor if qi == first_query else None, descending, budget_points, budget_minutes
        )
        cursor = None
        if q.id:  # ReturnData false: computed for nothing, as there is no math to feed
            results.append(
                {
                    "Id": q.id,
                    "Label": q.label,
                    "Timestamps": [float(t) for t, _ in values],
                    "Values": [v for _, v in values],
                    "StatusCode": "PartialData" if resume is not None else "Complete",
                }
            )
        if resume is not None:
            next_token = _token(fingerprint, qi, resume)
            break
    out: dict[str, Any] = {"MetricDataResults": results, "Messages": []}
    if next_token is not None:
        out["NextToken"] = next_token
    return out


def _queries(raw: list[dict[str, Any]], start: int, end: int) -> list[_Query]:
    seen: set[str] = set()
    out = []
    for i, q in enumerate(raw, 1):
        path = f"MetricDataQueries.member.{i}"
        qid = q["Id"]
        if not _QUERY_ID.match(qid) or len(qid) > 255:
            raise ValidationError(
                f"The value {qid[:255]} for parameter {path}.Id is not valid: an Id must start with a "
                f"lowercase letter and contain only letters, numbers and underscores."
            )
        if qid in seen:
            raise ValidationError(f"The value {qid} for parameter {path}.Id is not unique.")
        seen.add(qid)
        if q.get("Expression") is not None:
            if q.get("MetricStat") is not None:
                raise ValidationError(
                    f"The parameters {path}.MetricStat and {path}.Expression are mutually exclusive and "
                    f"you have specified both."
                )
            raise ValidationError(
                f"coldbrew does not evaluate metric math ({path}.Expression): ask for each metric with "
                f"a MetricStat query and combine the values in the client."
            )
        stat_spec = q.get("MetricStat")
        if stat_spec is None:
            raise MissingParameter(f"The parameter {path}.MetricStat or {path}.Expression is required.")
        metric = stat_spec["Metric"]
        for field in ("Namespace", "MetricName"):
            if metric.get(field) is None:
                raise MissingParameter(f"The parameter {path}.MetricStat.Metric.{field} is required.")
            _check_name(metric[field], f"{path}.MetricStat.Metric.{field}")
        dimensions = metric.get("Dimensions", [])
        _check_dimensions(dimensions, f"{path}.MetricStat.Metric.Dimensions", 30, values=True)
        period = stat_spec["Period"]
        if period <= 0 or period % 60:
            raise ValidationError(
                f"The value {period} for parameter {path}.MetricStat.Period is not a valid period: it "
                f"must be a multiple of 60 (SageMaker's endpoint metrics have one-minute resolution)."
            )
        stat = stat_spec["Stat"]
        pct = percentile(stat)
        if stat not in STATISTICS and pct is None:
            raise ValidationError(
                f"The value {stat[:40]} for parameter {path}.MetricStat.Stat is not a valid statistic "
                f"(coldbrew serves {', '.join(STATISTICS)} and percentiles pNN.NN)."
            )
        unit = stat_spec.get("Unit")
        _check_unit(unit, f"{path}.MetricStat.Unit", ValidationError)
        found = _find(metric["Namespace"], metric["MetricName"], dimensions, unit)
        series = None if found is None else Series(found[0], found[1], found[2], start, end, period)
        label = q.get("Label") or metric["MetricName"]
        out.append(_Query(qid if q.get("ReturnData", True) else "", label, series, stat, pct))
    return out


def _run(
    conn: sqlite3.Connection,
    q: _Query,
    cursor: int | None,
    descending: bool,
    budget_points: int,
    budget_minutes: int,
) -> tuple[list[tuple[int, float]], int | None, int, int]:
    """One query's values from period ``cursor`` on, within the budgets: (values, where to resume
    or None when done, the budgets left)."""
    s = q.series
    if s is None:
        return [], None, budget_points, budget_minutes
    periods = max(1, -(-(s.end - s.start) // s.period))
    first, last = (0, periods - 1)
    if cursor is not None:
        first, last = (first, cursor) if descending else (cursor, last)
    span = max(1, budget_minutes * 60 // s.period)  # periods the minute budget allows
    cut = None
    if last - first + 1 > span:
        if descending:
            cut, first = last - span, last - span + 1
        else:
            cut, last = first + span, first + span - 1
    budget_minutes -= (last - first + 1) * s.period // 60
    percentiles = [q.percentile] if q.percentile is not None else []
    points = statistics.read(
        conn, s, percentiles, first=first, last=last, descending=descending, limit=budget_points + 1
    )
    values = []
    resume = cut
    for point in points[:budget_points]:
        value = _statistic(point, q.stat)
        if value is not None:
            values.append((point.timestamp, value))
    if len(points) > budget_points:
        resume = (points[budget_points].timestamp - s.start) // s.period
    budget_points -= min(len(points), budget_points)
    return values, resume, budget_points, budget_minutes


def _fingerprint(request: dict[str, Any]) -> str:
    text = json.dumps(request, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _token(fingerprint: str, query: int, cursor: int | None) -> str:
    body = json.dumps({"f": fingerprint, "q": query, "c": cursor}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode()


def _read_token(token: str, fingerprint: str, queries: int) -> tuple[int, int | None]:
    try:
        body = json.loads(base64.urlsafe_b64decode(token.encode()))
        query, cursor = body["q"], body["c"]
        valid = (
            body["f"] == fingerprint
            and isinstance(query, int)
            and 0 <= query < queries
            and (cursor is None or (isinstance(cursor, int) and cursor >= 0))
        )
    except (ValueError, TypeError, KeyError):
        valid = False
    if not valid:
        raise InvalidNextToken(
            "The NextToken is not valid for this request: pass the NextToken of the previous response "
            "to the same request."
        )
    return query, cursor


# --- ListMetrics ------------------------------------------------------------------------------------


def list_metrics(conn: sqlite3.Connection, p: dict[str, Any], now: float) -> dict[str, Any]:
    namespace, name = p.get("Namespace"), p.get("MetricName")
    if namespace is not None:
        _check_name(namespace, "Namespace")
    if name is not None:
        _check_name(name, "MetricName")
    filters = p.get("Dimensions", [])
    _check_dimensions(filters, "Dimensions", 10, values=False)
    recently = p.get("RecentlyActive")
    if recently is not None and recently != "PT3H":
        raise InvalidParameterValue("The parameter RecentlyActive must be a value in the set [ PT3H ].")
    window = RECENTLY_ACTIVE_S if recently else LIST_WINDOW_S
    fingerprint = _fingerprint({"n": namespace, "m": name, "d": filters, "r": recently})
    offset = 0
    if p.get("NextToken") is not None:
        offset, _ = _read_token(p["NextToken"], fingerprint, 1 << 62)

    def values(endpoint: str, variant: str | None) -> dict[str, str]:
        dims = {"EndpointName": endpoint}
        if variant is not None:
            dims["VariantName"] = variant
        return dims

    def keep(metric: Metric, endpoint: str, variant: str | None) -> bool:
        if namespace is not None and metric.namespace != namespace:
            return False
        if name is not None and metric.name != name:
            return False
        dims = values(endpoint, variant)
        for f in filters:
            if f["Name"] not in dims or f.get("Value") not in (None, dims[f["Name"]]):
                return False
        return True

    matched = [t for t in statistics.active(conn, int(now - window)) if keep(*t)]
    page = matched[offset : offset + LIST_PAGE]
    out: dict[str, Any] = {
        "Metrics": [
            {
                "Namespace": m.namespace,
                "MetricName": m.name,
                "Dimensions": [{"Name": k, "Value": value} for k, value in values(e, v).items()],
            }
            for m, e, v in page
        ]
    }
    if offset + LIST_PAGE < len(matched):
        out["NextToken"] = _token(fingerprint, offset + LIST_PAGE, None)
    return out


OPERATIONS: dict[str, Callable[[sqlite3.Connection, dict[str, Any], float], dict[str, Any]]] = {
    "GetMetricStatistics": get_metric_statistics,
    "GetMetricData": get_metric_data,
    "ListMetrics": list_metrics,
}
