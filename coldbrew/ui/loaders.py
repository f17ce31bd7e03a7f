"""Each page's data: read from the stores and assembled into its view. Blocking: run in a thread.

The HTML pages and the JSON API under ``/ui/api/`` are answered from the same loaders, so a page
shows exactly what its API returns.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from fractions import Fraction

import psutil

from coldbrew.backends.processes import rss
from coldbrew.metering.prices import PriceTable
from coldbrew.metering.query import cost_report
from coldbrew.metering.statistics import Percentile
from coldbrew.ui import reads
from coldbrew.ui.access import LOGS, Viewer
from coldbrew.ui.charts import Charts, charts
from coldbrew.ui.config_view import is_async, model_names, variant_lines
from coldbrew.ui.cost_view import CostPage, cost_page
from coldbrew.ui.costs import CostCache, DayCosts
from coldbrew.ui.db import ReadOnly
from coldbrew.ui.endpoint_view import CaptureCounts, EndpointPage, endpoint_page
from coldbrew.ui.endpoints_view import Costs, EndpointsPage, costs_by_endpoint, endpoint_row, endpoints_page
from coldbrew.ui.latency import HistogramMemo, VariantWindow, read_window
from coldbrew.ui.live import LiveState, with_memory
from coldbrew.ui.machine_view import MachinePage, ZygoteRow, machine_page
from coldbrew.ui.minutes import MinuteCache
from coldbrew.ui.periods import DAY_S, RANGES, chart_window, last_hour, month_start, today_start
from coldbrew.ui.sources import UiSources

LOG_LINES = 50
PERCENTILES = (Percentile("p50", Fraction(1, 2)), Percentile("p99", Fraction(99, 100)))


class StoreNotReady(Exception):
    """The database file does not exist yet (a server that has not finished starting)."""


class Loaders:
    def __init__(self, sources: UiSources, prices: PriceTable) -> None:
        self.sources = sources
        self.prices = prices
        self.db = ReadOnly(sources.db_path)
        self.logs_db = ReadOnly(sources.logs_db_path) if sources.logs_db_path is not None else None
        self.async_db = ReadOnly(sources.async_db_path)
        self.minutes = MinuteCache(sources.meter_writes)
        self.histograms = HistogramMemo()
        self.parsed = reads.ParsedJson()
        self.costs = CostCache(prices, self.minutes)
        self.days = DayCosts(prices, sources.meter_writes)

    def _conn(self) -> sqlite3.Connection:
        conn = self.db.connection()
        if conn is None:
            raise StoreNotReady(f"{self.sources.db_path} does not exist yet")
        return conn

    @property
    def price_note(self) -> str:
        p = self.prices
        note = f"Cost in {p.currency} at {p.region} on-demand prices of {p.date}."
        region = p.region_note(self.sources.region)
        return f"{note} Note: {region}." if region else note

    def _usage(
        self, conn: sqlite3.Connection, now: float, endpoint: str | None = None
    ) -> list[VariantWindow]:
        window = last_hour(now)
        found = read_window(
            conn, window.start, window.end, PERCENTILES, minutes=self.minutes, memo=self.histograms
        )
        if endpoint is not None:
            found = [u for u in found if u.endpoint.lower() == endpoint.lower()]
        return found

    def endpoints(self, live: LiveState, now: float | None = None) -> EndpointsPage:
        now = time.time() if now is None else now
        self.sources.flush_meter()
        conn = self._conn()
        stored = reads.endpoints(conn, self.parsed)
        usage = self._usage(conn, now)
        today, month = self.costs.today_and_month(conn, stored, now)
        return endpoints_page(
            stored, usage, today, month, live, last_hour(now), self.prices.currency, self.price_note
        )

    def endpoint(
        self, name: str, viewer: Viewer, live: LiveState, now: float | None = None
    ) -> EndpointPage | None:
        now = time.time() if now is None else now
        self.sources.flush_meter()
        conn = self._conn()
        stored = reads.endpoint(conn, name)
        if stored is None:
            return None
        usage = self._usage(conn, now, stored.name)
        today = costs_by_endpoint(cost_report(conn, self.prices, stored.name, today_start(now), now))
        month = costs_by_endpoint(cost_report(conn, self.prices, stored.name, month_start(now), now))
        key = stored.name.lower()
        row = endpoint_row(stored, usage, today.get(key), month.get(key), live)
        group = f"/aws/sagemaker/Endpoints/{stored.name}"
        logs = None
        if self.logs_db is not None and viewer.can(LOGS, viewer.log_group_arn(group)):
            logs = self.log_lines(stored.name)
        queue = None
        if is_async(stored.deployment):
            async_conn = self.async_db.connection()
            queue = (
                reads.async_queue(async_conn, key)
                if async_conn is not None
                else reads.AsyncQueueState({}, None, [])
            )
        jobs = (
            reads.transform_jobs(conn, model_names(stored.deployment))
            if "transform_jobs" in self.db.tables()
            else []
        )
        mine = with_memory(replace(live, variants=tuple(live.of(stored.name))))
        writer = self.sources.capture
        counts = (
            CaptureCounts(writer.written, writer.dropped_full, writer.dropped_failed, writer.buffered_bytes)
            if writer is not None
            else None
        )
        return endpoint_page(stored, row, list(mine.variants), logs, queue, jobs, counts)

    def log_lines(self, endpoint: str, limit: int = LOG_LINES) -> list[reads.LogLine]:
        conn = self.logs_db.connection() if self.logs_db is not None else None
        if conn is None:
            return []
        return reads.recent_log_lines(conn, f"/aws/sagemaker/Endpoints/{endpoint}", limit)

    def charts(self, name: str, range_name: str, now: float | None = None) -> Charts | None:
        now = time.time() if now is None else now
        self.sources.flush_meter()
        conn = self._conn()
        stored = reads.endpoint(conn, name)
        if stored is None:
            return None
        range_ = RANGES[range_name]
        variants = [(v.name, v.serverless) for v in variant_lines(stored.deployment, stored.summaries)]
        return charts(conn, stored.name, variants, range_, chart_window(range_, now), now)

    def cost(self, days: int, now: float | None = None) -> CostPage:
        now = time.time() if now is None else now
        self.sources.flush_meter()
        conn = self._conn()
        today = today_start(now)
        starts = [today - (days - 1 - i) * DAY_S for i in range(days)]
        stored = reads.endpoints(conn, self.parsed)
        # Today and the month as the endpoints page has them; the days before, priced once a day.
        today_costs, month = self.costs.today_and_month(conn, stored, now)
        closed = self.days.closed(conn, stored, starts, now) if days > 1 else []
        by_day = [*closed, {k: c.cost for k, c in today_costs.items()}]
        cumulative = []
        for i in range(days):
            since: dict[str, float] = {}
            for day in by_day[i:]:
                for key, cost in day.items():
                    since[key] = since.get(key, 0.0) + cost
            cumulative.append({key: Costs(cost=cost, invocations=0) for key, cost in since.items()})
        names = [s.name for s in stored]
        return cost_page(starts, cumulative, month, names, self.prices.currency, self.price_note)

    def machine(self, live: LiveState, zygotes: list[tuple[str, int, bool]]) -> MachinePage:
        """``zygotes``: (runtime, pid, alive) as seen on the event loop; their memory is read here."""
        rows = [
            ZygoteRow(runtime, pid, rss(pid, children=False) if alive else 0, alive)
            for runtime, pid, alive in zygotes
        ]
        memory = psutil.virtual_memory()
        return machine_page(live, rows, int(memory.total), int(memory.available))
