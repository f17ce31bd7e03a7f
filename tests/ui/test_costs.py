"""The endpoints page's costs (the month up to the hour priced once, the hour on every load) equal
``cost_report`` over the whole period, the numbers ``coldbrew cost`` prints."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from coldbrew.control.store import Store
from coldbrew.metering.aggregate import MinuteAggregate, register_sql_functions, upsert_sql
from coldbrew.metering.prices import load_prices
from coldbrew.metering.query import cost_report
from coldbrew.metering.written import MinuteLog
from coldbrew.ui import reads
from coldbrew.ui.cost_view import cost_page
from coldbrew.ui.costs import CostCache
from coldbrew.ui.endpoints_view import Costs, costs_by_endpoint
from coldbrew.ui.loaders import Loaders
from coldbrew.ui.minutes import MinuteCache
from coldbrew.ui.sources import UiSources

MONTH = dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp()
CACHED_AT = MONTH + 9 * 86400 + 14 * 3600 + 600  # Dec 10, 14:10
NOW = CACHED_AT + 1500  # 14:35, rows added in between


def _serverless(memory: int, provisioned: int = 0) -> dict[str, object]:
    config = {"MemorySizeInMB": memory, "MaxConcurrency": 5}
    if provisioned:
        config["ProvisionedConcurrency"] = provisioned
    return {"VariantName": "AllTraffic", "ModelName": "m", "ServerlessConfig": config}


ENDPOINTS = {
    # name: (created, variant spec)
    "old-busy": (MONTH - 86400, _serverless(2048)),
    "quiet-now": (MONTH + 3 * 86400, _serverless(1024)),
    "new-today": (CACHED_AT - 1200, _serverless(3072)),
    "provisioned": (MONTH + 86400, {"VariantName": "AllTraffic", "ModelName": "m",
                                    "InstanceType": "ml.m5.large", "InitialInstanceCount": 2}),
    "with-pc": (MONTH + 5 * 86400, _serverless(1024, provisioned=1)),
}  # fmt: skip


def _minute(invocations: int, serverless: bool, memory: int) -> MinuteAggregate:
    agg = MinuteAggregate(serverless=int(serverless), memory_mb=memory, invocations=invocations)
    agg.billed_mb_ms = invocations * memory * 120
    agg.bytes_in = agg.bytes_out = invocations * 100
    agg.samples = 120
    agg.held_mb_s = memory * 60.0
    return agg


def _write(db: Path, start: float, end: float, names: list[str], log: MinuteLog | None = None) -> None:
    """Rows as the meter writes them; ``log``: told which minutes, as the meter tells its own."""
    conn = sqlite3.connect(db, isolation_level=None)
    register_sql_functions(conn)
    rows = []
    for name in names:
        created, variant = ENDPOINTS[name]
        serverless = "ServerlessConfig" in variant
        memory = int(variant["ServerlessConfig"]["MemorySizeInMB"]) if serverless else 8192  # type: ignore[index]
        minute = int(max(start, created) // 60 * 60)
        while minute < end:
            rows.append(
                (name, "AllTraffic", minute, *_minute(3 if serverless else 5, serverless, memory).row())
            )
            minute += 1200 if name != "old-busy" else 300
    conn.executemany(upsert_sql(), rows)
    conn.close()
    if log is not None:
        log.wrote({int(row[2]) for row in rows})  # type: ignore[call-overload]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "coldbrew.db"
    Store(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    for name, (created, variant) in ENDPOINTS.items():
        deployment = {"ConfigName": name, "Config": {"ProductionVariants": [variant]}, "Models": {}}
        conn.execute(
            "INSERT INTO endpoints (name_key, name, arn, created_at, modified_at, status, config_name, "
            "deployment) VALUES (?, ?, ?, ?, ?, 'InService', ?, ?)",
            [name, name, f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{name}", created, created, name,
             json.dumps(deployment)],
        )  # fmt: skip
    conn.close()
    # History, then the current hour up to the moment the cache is filled, then more of it.
    _write(path, MONTH - 86400, CACHED_AT, ["old-busy", "new-today", "provisioned", "with-pc"])
    _write(path, MONTH + 3 * 86400, MONTH + 4 * 86400, ["quiet-now"])  # nothing since
    return path


def _equal(conn: sqlite3.Connection, got: dict[str, Costs], since: float, now: float) -> None:
    expected = costs_by_endpoint(cost_report(conn, load_prices(), None, since, now))
    assert got.keys() == expected.keys()
    for name, costs in expected.items():
        mine = got[name]
        assert mine.cost == pytest.approx(costs.cost, rel=1e-9, abs=1e-15), name
        assert mine.invocations == costs.invocations, name
        assert mine.instance_type == costs.instance_type, name
        for field in ("instance_cost", "instance_hourly", "invocations_per_hour", "break_even_per_hour"):
            # pytest 9.2 refuses approx(None): a figure that is not there is compared as such.
            want = getattr(costs, field)
            close = want if want is None else pytest.approx(want, rel=1e-9)
            assert getattr(mine, field) == close, (name, field)


def _open(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def test_today_and_month_equal_cost_report(db: Path) -> None:
    prices = load_prices()
    log = MinuteLog()
    cache = CostCache(prices, MinuteCache(log))
    conn = _open(db)
    stored = reads.endpoints(conn)
    cache.today_and_month(conn, stored, CACHED_AT)
    _write(db, CACHED_AT, NOW, ["old-busy", "new-today", "provisioned", "with-pc"], log)
    today, month = cache.today_and_month(conn, stored, NOW)
    _equal(conn, today, MONTH + 9 * 86400, NOW)
    _equal(conn, month, MONTH, NOW)
    assert month["quiet-now"].instance_cost == pytest.approx(
        prices.instance_hourly(month["quiet-now"].instance_type or "") * (NOW - (MONTH + 3 * 86400)) / 3600
    )
    # Unchanged minutes, a later instant: the serverless endpoints' costs are reused, the
    # instances' and the alternatives' grow with the clock.
    later = NOW + 120
    today, month = cache.today_and_month(conn, stored, later)
    _equal(conn, today, MONTH + 9 * 86400, later)
    _equal(conn, month, MONTH, later)


def test_the_next_hours_and_a_late_write_to_a_closed_hour(db: Path) -> None:
    """Hours that end are added from the minutes in memory; a minute written again after its
    hour ended (an asynchronous invocation, recorded when it started) is read again."""
    log = MinuteLog()
    cache = CostCache(load_prices(), MinuteCache(log))
    conn = _open(db)
    stored = reads.endpoints(conn)
    cache.today_and_month(conn, stored, CACHED_AT)
    names = ["old-busy", "new-today", "provisioned", "with-pc"]
    at = CACHED_AT
    for step in (1500, 3600, 2 * 3600, 600):  # into the next hour, the one after, then within it
        _write(db, at, at + step, names, log)
        at += step
        today, month = cache.today_and_month(conn, stored, at)
        _equal(conn, today, MONTH + 9 * 86400, at)
        _equal(conn, month, MONTH, at)
    # Two hours back, a minute that ended long ago changes.
    _write(db, at - 2 * 3600 - 60, at - 2 * 3600, ["old-busy", "new-today"], log)
    today, month = cache.today_and_month(conn, stored, at + 5)
    _equal(conn, today, MONTH + 9 * 86400, at + 5)
    _equal(conn, month, MONTH, at + 5)
    # Past midnight: today starts again.
    midnight = MONTH + 10 * 86400
    _write(db, at, midnight + 1800, names, log)
    today, month = cache.today_and_month(conn, stored, midnight + 1800)
    _equal(conn, today, midnight, midnight + 1800)
    _equal(conn, month, MONTH, midnight + 1800)


def test_the_cost_page_equals_a_cost_report_per_day(db: Path) -> None:
    """Each day's cost is the difference of cost_report since its start and since the next's."""
    log = MinuteLog()
    sources = UiSources(
        serving=None, api=None, db_path=db, logs_db_path=None, async_db_path=db.parent / "async.db",  # type: ignore[arg-type]
        flush_meter=lambda: None, meter_writes=log, region="us-east-1", account_id="123456789012", keys=None,
    )  # fmt: skip
    prices = load_prices()
    loaders = Loaders(sources, prices)
    conn = _open(db)
    names = [s.name for s in reads.endpoints(conn)]
    for now in (CACHED_AT, NOW, NOW + 86400 + 600):
        _write(db, now - 1500, now, ["old-busy", "new-today", "provisioned", "with-pc"], log)
        for days in (1, 7, 31):
            page = loaders.cost(days, now)
            starts = [MONTH + 9 * 86400 + (now >= MONTH + 10 * 86400) * 86400 - (days - 1 - i) * 86400
                      for i in range(days)]  # fmt: skip
            cumulative = [costs_by_endpoint(cost_report(conn, prices, None, s, now)) for s in starts]
            month = costs_by_endpoint(cost_report(conn, prices, None, MONTH, now))
            expected = cost_page(starts, cumulative, month, names, prices.currency, loaders.price_note)
            assert page.days == expected.days and page.idle_endpoints == expected.idle_endpoints
            assert [r.endpoint for r in page.rows] == [r.endpoint for r in expected.rows]
            for mine, want in zip(page.rows, expected.rows, strict=True):
                assert mine.days == pytest.approx(want.days, rel=1e-9, abs=1e-12), (now, days, mine.endpoint)
                assert mine.cheaper == want.cheaper
