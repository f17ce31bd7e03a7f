"""An endpoint's charts: CloudWatch's own GetMetricStatistics, one series per variant and statistic.

Each chart is answered by :func:`coldbrew.cloudwatch.operations.get_metric_statistics`, the function
behind the CloudWatch API, so a chart's points are the datapoints a client gets for the same
metric, dimensions, window and period.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from coldbrew.cloudwatch.operations import get_metric_statistics
from coldbrew.metering.statistics import ENDPOINTS, SAGEMAKER
from coldbrew.ui.periods import ChartRange, Window


@dataclass(frozen=True, slots=True)
class ChartSpec:
    key: str
    title: str
    namespace: str
    metric: str
    statistic: str
    """A CloudWatch statistic (Sum, Average, SampleCount) or a percentile (p99)."""
    unit: str
    """What the values are in once scaled for reading: ms, %, count."""
    scale: float = 1.0
    """Multiplied into CloudWatch's value (microseconds to milliseconds)."""
    counts: bool = False
    """A period without datapoints is 0 (nothing happened), not a gap."""
    serverless_only: bool = False


CHARTS: tuple[tuple[ChartSpec, ...], ...] = (
    (ChartSpec("invocations", "Invocations", SAGEMAKER, "Invocations", "Sum", "count", counts=True),),
    (
        ChartSpec("latency_avg", "ModelLatency", SAGEMAKER, "ModelLatency", "Average", "ms", 0.001),
        ChartSpec("latency_p99", "ModelLatency", SAGEMAKER, "ModelLatency", "p99", "ms", 0.001),
    ),
    (ChartSpec("overhead", "OverheadLatency", SAGEMAKER, "OverheadLatency", "Average", "ms", 0.001),),
    (
        ChartSpec(
            "setup",
            "ModelSetupTime",
            SAGEMAKER,
            "ModelSetupTime",
            "Average",
            "ms",
            0.001,
            serverless_only=True,
        ),
    ),
    (
        ChartSpec(
            "cold_starts",
            "Cold starts",
            SAGEMAKER,
            "ModelSetupTime",
            "SampleCount",
            "count",
            counts=True,
            serverless_only=True,
        ),
    ),  # fmt: skip
    (
        ChartSpec(
            "errors_4xx", "4XX / 5XX errors", SAGEMAKER, "Invocation4XXErrors", "Sum", "count", counts=True
        ),
        ChartSpec(
            "errors_5xx", "4XX / 5XX errors", SAGEMAKER, "Invocation5XXErrors", "Sum", "count", counts=True
        ),
    ),
    (ChartSpec("memory", "MemoryUtilization", ENDPOINTS, "MemoryUtilization", "Average", "%"),),
    (
        ChartSpec(
            "concurrency",
            "Concurrent executions (utilization)",
            SAGEMAKER,
            "ServerlessConcurrentExecutionsUtilization",
            "Average",
            "ratio",
            serverless_only=True,
        ),
    ),  # fmt: skip
)


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    """``<variant> <statistic>``."""
    variant: str
    statistic: str
    values: list[float | None]
    """One per period of the chart's x axis."""
    total: float | None
    """Sum of the points for counts; else None."""


@dataclass(frozen=True, slots=True)
class Chart:
    key: str
    title: str
    unit: str
    series: list[Series]


@dataclass(frozen=True, slots=True)
class Charts:
    range: str
    period: int
    start: int
    end: int
    x: list[int]
    """Each period's start (Unix seconds)."""
    charts: list[Chart]


def _params(spec: ChartSpec, endpoint: str, variant: str, window: Window, period: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "Namespace": spec.namespace,
        "MetricName": spec.metric,
        "Dimensions": [
            {"Name": "EndpointName", "Value": endpoint},
            {"Name": "VariantName", "Value": variant},
        ],
        "StartTime": float(window.start),
        "EndTime": float(window.end),
        "Period": period,
    }
    if spec.statistic.startswith("p"):
        params["ExtendedStatistics"] = [spec.statistic]
    else:
        params["Statistics"] = [spec.statistic]
    return params


def _value(point: dict[str, Any], statistic: str) -> float | None:
    if statistic.startswith("p"):
        value = point.get("ExtendedStatistics", {}).get(statistic)
    else:
        value = point.get(statistic)
    return None if value is None else float(value)


def charts(
    conn: sqlite3.Connection,
    endpoint: str,
    variants: list[tuple[str, bool]],
    range_: ChartRange,
    window: Window,
    now: float,
) -> Charts:
    """``variants``: (name, serverless) of the endpoint's variants."""
    x = list(range(window.start, window.end, range_.period))
    index = {t: i for i, t in enumerate(x)}
    out = []
    for group in CHARTS:
        series = []
        for spec in group:
            for variant, serverless in variants:
                if spec.serverless_only and not serverless:
                    continue
                answer = get_metric_statistics(
                    conn, _params(spec, endpoint, variant, window, range_.period), now
                )
                values: list[float | None] = [0.0 if spec.counts else None] * len(x)
                for point in answer["Datapoints"]:
                    i = index.get(int(point["Timestamp"]))
                    value = _value(point, spec.statistic)
                    if i is not None and value is not None:
                        values[i] = value * spec.scale
                total = sum(v for v in values if v is not None) if spec.counts else None
                label = f"{variant} {spec.metric if len(group) > 1 and spec.counts else spec.statistic}"
                series.append(Series(label, variant, spec.statistic, values, total))
        if series:
            first = group[0]
            out.append(Chart(first.key, first.title, first.unit, series))
    return Charts(range_.name, range_.period, window.start, window.end, x, out)
