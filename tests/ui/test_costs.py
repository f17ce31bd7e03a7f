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
from coldbrew.ui import reads
from coldbrew.ui.costs import CostCache
from coldbrew.ui.endpoints_view import costs_by_endpoint

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


def _write(db: Path, start: float, end: float, names: list[str]) -> None:
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


def test_today_and_month_equal_cost_report(db: Path) -> None:
    prices = load_prices()
    cache = CostCache(prices)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    stored = reads.endpoints(conn)
    cache.today_and_month(conn, stored, CACHED_AT)
    _write(db, CACHED_AT, NOW, ["old-busy", "new-today", "provisioned", "with-pc"])
    today, month = cache.today_and_month(conn, stored, NOW)
    for got, since in ((today, MONTH + 9 * 86400), (month, MONTH)):
        expected = costs_by_endpoint(cost_report(conn, prices, None, since, NOW))
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
    assert month["quiet-now"].instance_cost == pytest.approx(
        prices.instance_hourly(month["quiet-now"].instance_type or "") * (NOW - (MONTH + 3 * 86400)) / 3600
    )
