"""The tune report: the same figures as JSON, CSV and an HTML page with two plots.

The page is one self-contained file: its plots are drawn by the dashboard's uPlot (shipped in
``coldbrew/ui/static``), inlined, so it opens from disk, offline, and can be mailed around.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

from coldbrew.tune.run import ConfigResult, TuneResult

CSV_FIELDS = [
    "memory_mb",
    "endpoint",
    "threads",
    "concurrency",
    "sent",
    "errors",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "max_ms",
    "throughput_per_s",
    "cold_start_ms",
    "config_sent",
    "config_errors",
    "meter_invocations",
    "meter_cold_starts",
    "billed_ms_per_invocation",
    "billing_source",
    "cost_per_million",
    "monthly_cost",
    "recommended",
]


def config_summary(config: ConfigResult, recommended: int | None) -> dict[str, Any]:
    """One configuration's headline figures, as the JSON's ``summary`` and the console table show them."""
    return {
        "memory_mb": config.memory_mb,
        "endpoint": config.endpoint,
        "threads": config.threads,
        "cold_start_ms": config.cold_start_ms,
        "warm_p50_ms": _first_level(config, "p50_ms"),
        "warm_p99_ms": config.warm_p99_ms,
        "max_throughput_per_s": max((level.throughput_per_s for level in config.levels), default=None),
        "sent": config.sent,
        "errors": config.errors,
        "meter_invocations": None if config.meter is None else config.meter.invocations,
        "billed_ms_per_invocation": config.billed_ms_per_invocation,
        "cost_per_million": None if config.pricing is None else config.pricing.cost_per_million,
        "monthly_cost": None if config.pricing is None else config.pricing.monthly_cost,
        "failure": config.failure,
        "recommended": config.memory_mb == recommended,
    }


def _first_level(config: ConfigResult, attribute: str) -> float | None:
    """``attribute`` of the lowest concurrency level's latency: an unloaded request's figure."""
    for level in config.levels:
        if level.latency is not None:
            value: float = getattr(level.latency, attribute)
            return value
    return None


def to_json(result: TuneResult) -> dict[str, Any]:
    data = asdict(result)
    data["summary"] = [config_summary(c, result.recommendation.memory_mb) for c in result.configs]
    return data


def csv_rows(result: TuneResult) -> list[dict[str, Any]]:
    """One row per configuration and concurrency level (a configuration measured at no level, e.g.
    one that failed to deploy, gets one row with its concurrency empty)."""
    rows = []
    for config in result.configs:
        summary = config_summary(config, result.recommendation.memory_mb)
        common = {
            "memory_mb": config.memory_mb,
            "endpoint": config.endpoint,
            "threads": config.threads,
            "cold_start_ms": config.cold_start_ms,
            "config_sent": config.sent,
            "config_errors": config.errors,
            "meter_invocations": summary["meter_invocations"],
            "meter_cold_starts": None if config.meter is None else config.meter.cold_starts,
            "billed_ms_per_invocation": config.billed_ms_per_invocation,
            "billing_source": config.billing_source,
            "cost_per_million": summary["cost_per_million"],
            "monthly_cost": summary["monthly_cost"],
            "recommended": summary["recommended"],
        }
        if not config.levels:
            rows.append(common)
        for level in config.levels:
            latency = level.latency
            rows.append(
                {
                    **common,
                    "concurrency": level.concurrency,
                    "sent": level.sent,
                    "errors": level.errors,
                    "p50_ms": None if latency is None else latency.p50_ms,
                    "p90_ms": None if latency is None else latency.p90_ms,
                    "p99_ms": None if latency is None else latency.p99_ms,
                    "mean_ms": None if latency is None else latency.mean_ms,
                    "max_ms": None if latency is None else latency.max_ms,
                    "throughput_per_s": level.throughput_per_s,
                }
            )
    return rows


def plot_data(result: TuneResult) -> dict[str, Any]:
    """The two plots' series, in uPlot's layout (x values first, then one array per series)."""
    priced = sorted(
        (c for c in result.configs if c.warm_p99_ms is not None and c.pricing is not None),
        key=lambda c: (c.warm_p99_ms, c.memory_mb),
    )
    # Cost against latency: one series per memory size, so the legend names each point.
    cost_x = [c.warm_p99_ms for c in priced]
    cost_series = []
    for i, c in enumerate(priced):
        assert c.pricing is not None
        values: list[float | None] = [None] * len(priced)
        values[i] = c.pricing.cost_per_million
        cost_series.append({"label": f"{c.memory_mb:,} MB", "values": values})
    measured = sorted((c for c in result.configs if c.levels), key=lambda c: c.memory_mb)
    latency_series = [
        {"label": "cold start", "values": [c.cold_start_ms for c in measured]},
    ]
    for concurrency in result.concurrency:
        for name in ("p50", "p99"):
            values = []
            for c in measured:
                level = next((lv for lv in c.levels if lv.concurrency == concurrency), None)
                latency = None if level is None else level.latency
                values.append(None if latency is None else getattr(latency, f"{name}_ms"))
            latency_series.append({"label": f"{name} x{concurrency}", "values": values})
    return {
        "cost": {"x": cost_x, "series": cost_series},
        "latency": {"x": [c.memory_mb for c in measured], "series": latency_series},
    }


def _f1(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.4f}"


def render_html(result: TuneResult) -> str:
    import jinja2
    from markupsafe import Markup

    static = resources.files("coldbrew").joinpath("ui/static")
    env = jinja2.Environment(autoescape=True)
    template = env.from_string(resources.files("coldbrew.tune").joinpath("report.html").read_text())
    # JSON inside <script>: "</" would end the element early, so it is escaped.
    plots_json = json.dumps(plot_data(result)).replace("</", "<\\/")
    return template.render(
        r=result,
        summary=[config_summary(c, result.recommendation.memory_mb) for c in result.configs],
        rows=csv_rows(result),
        f1=_f1,
        money=_money,
        uplot_js=Markup(static.joinpath("uPlot.iife.min.js").read_text()),
        uplot_css=Markup(static.joinpath("uPlot.min.css").read_text()),
        plots_json=Markup(plots_json),
    )


def write_report(result: TuneResult, out: Path) -> dict[str, Path]:
    """``tune.json``, ``tune.csv`` and ``tune.html`` in ``out`` (made if missing); their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "tune.json", "csv": out / "tune.csv", "html": out / "tune.html"}
    paths["json"].write_text(json.dumps(to_json(result), indent=2) + "\n")
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows(result))
    paths["html"].write_text(render_html(result))
    return paths
