"""Cost arithmetic against figures computed by hand, and the price table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coldbrew.metering.cost import (
    Usage,
    breakeven_per_hour,
    instance_cost,
    lambda_cost,
    per_million,
    serverless_cost,
)
from coldbrew.metering.prices import load_prices
from coldbrew.metering.records import MeterRecord


def _record(model_latency_us: int, memory_mb: int, serverless: bool = True) -> MeterRecord:
    return MeterRecord.answered(
        endpoint="ep",
        variant="v",
        started_at=0.0,
        total_us=model_latency_us,
        model_latency_us=model_latency_us,
        cold_start=False,
        setup_ms=0.0,
        memory_mb=memory_mb,
        serverless=serverless,
        bytes_in=0,
        bytes_out=0,
    )


@pytest.fixture(scope="module")
def prices():  # type: ignore[no-untyped-def]
    return load_prices()


def test_shipped_prices_carry_the_articles_figures(prices) -> None:  # type: ignore[no-untyped-def]
    assert prices.sagemaker_serverless.per_gb_second == 0.00002
    assert prices.instance_hourly("ml.m5.xlarge") == 0.23
    assert prices.instance_hourly("ml.t2.medium") == 0.056
    assert prices.instance_hourly("ml.m5.large") == 0.115
    assert prices.lambda_arch("x86").per_gb_second == 0.0000166667
    assert prices.lambda_arch("arm").per_gb_second == 0.0000133334
    assert prices.lambda_arch("arm").per_request * 1_000_000 == pytest.approx(0.20)
    assert prices.date and prices.region == "us-east-2"
    for name in ("ml.t2.medium", "ml.m5.large", "ml.m5.xlarge", "ml.c5.large", "ml.c5.xlarge"):
        assert prices.instance_hourly(name) > 0


def test_user_prices_override_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"region": "eu-west-1", "sagemaker_instances": {"ml.m5.xlarge": 0.258}}))
    mine = load_prices(path)
    assert mine.region == "eu-west-1" and mine.instance_hourly("ml.m5.xlarge") == 0.258
    assert mine.instance_hourly("ml.t2.medium") == 0.056  # untouched
    toml = tmp_path / "mine.toml"
    toml.write_text("[sagemaker_serverless]\nper_gb_second = 0.00003\n")
    monkeypatch.setenv("COLDBREW_PRICES", str(toml))
    assert load_prices().sagemaker_serverless.per_gb_second == 0.00003


def test_smallest_instance_that_fits(prices) -> None:  # type: ignore[no-untyped-def]
    assert prices.smallest_instance(1024) == "ml.t2.medium"  # 4 GB, the cheapest
    assert prices.smallest_instance(6144) == "ml.t2.large"  # 8 GB at 0.111 beats ml.m5.large at 0.115
    with pytest.raises(ValueError):
        prices.smallest_instance(10**7)


def test_serverless_cost_by_hand(prices) -> None:  # type: ignore[no-untyped-def]
    # 1,000 invocations of 250 ms at 2 GB = 500 GB-s x 0.00002 = 0.01; 1 MB in and 3 MB out
    # each = 1 GB + 3 GB (decimal) x 0.016 = 0.064.
    record = _record(model_latency_us=250_000, memory_mb=2048)
    usage = Usage(1000, 1000 * record.billed_mb_ms / 1024 / 1000, 1000 * 10**6, 3000 * 10**6)
    assert usage.gb_seconds == 500
    assert serverless_cost(usage, prices) == pytest.approx(0.01 + 0.064, abs=1e-12)
    assert per_million(0.074, 1000) == pytest.approx(74.0)
    # Billed by the millisecond, rounded up: 1.2 ms bills 2 ms; provisioned instances are not.
    assert _record(model_latency_us=1_200, memory_mb=1024).billed_mb_ms == 2 * 1024
    assert _record(model_latency_us=1_200, memory_mb=1024, serverless=False).billed_mb_ms == 0


def test_lambda_worked_example(prices) -> None:  # type: ignore[no-untyped-def]
    # "Serverless Machine Learning Inference": 1M requests x 200 ms at 1024 MB on Arm
    # = 0.20 (requests) + 2.67 (compute) = 2.87 USD.
    usage = Usage(1_000_000, 200_000.0)  # 1M x 0.2 s x 1 GB
    total = lambda_cost(usage, prices, "arm")
    assert total == pytest.approx(0.2 + 200_000 * 0.0000133334)
    assert round(total - 0.2, 2) == 2.67 and round(total, 2) == 2.87


def test_instance_cost_and_breakeven(prices) -> None:  # type: ignore[no-untyped-def]
    assert instance_cost("ml.m5.xlarge", 720, prices) == pytest.approx(165.60)  # "approximately $166"
    assert instance_cost("ml.t2.medium", 720, prices) == pytest.approx(40.32)
    assert instance_cost("ml.c5.large", 10, prices, count=2) == pytest.approx(2.04)
    # One 1 s, 1 GB invocation costs 0.00002: an ml.m5.xlarge (0.23/h) breaks even at 11,500 an hour.
    assert breakeven_per_hour(0.23, 0.00002) == pytest.approx(11_500)
    assert breakeven_per_hour(0.23, 0.0) is None


def test_cost_report_by_hand(tmp_path: Path, prices) -> None:  # type: ignore[no-untyped-def]
    from coldbrew.control.store import Store, dumps
    from coldbrew.metering.query import cost_report, open_readonly

    now = 1_700_000_000.0
    store = Store(tmp_path / "coldbrew.db")
    deployment = {
        "ConfigName": "c",
        "Models": {},
        "Config": {
            "ProductionVariants": [
                {
                    "VariantName": "Serverless",
                    "ModelName": "m",
                    "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
                },
                {
                    "VariantName": "Instances",
                    "ModelName": "m",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 2,
                },
            ]
        },
    }
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO endpoints "
            "(name_key, name, arn, created_at, modified_at, status, config_name, deployment) "
            "VALUES ('mixed', 'Mixed', 'arn', ?, ?, 'InService', 'c', ?)",
            [now - 10 * 3600, now - 10 * 3600, dumps(deployment)],
        )
        # 3,600 serverless invocations of 500 ms at 2 GB = 3,600 GB-s; 1 MB in and out each.
        conn.execute(
            "INSERT INTO meter_minutes (endpoint, variant, minute, serverless, memory_mb, invocations, "
            "billed_mb_ms, bytes_in, bytes_out) VALUES ('mixed', 'Serverless', ?, 1, 2048, 3600, ?, ?, ?)",
            [int(now - 3600) // 60 * 60, 3600 * 2048 * 500, 3600 * 10**6, 3600 * 10**6],
        )
        conn.execute(
            "INSERT INTO meter_minutes (endpoint, variant, minute, serverless, memory_mb, invocations) "
            "VALUES ('mixed', 'Instances', ?, 0, 8192, 400)",
            [int(now - 3600) // 60 * 60],
        )
    store.close()
    report = cost_report(open_readonly(tmp_path / "coldbrew.db"), prices, "mixed", None, now=now)
    (endpoint,) = report["Endpoints"]
    serverless = next(v for v in endpoint["Variants"] if v["VariantName"] == "Serverless")
    instances = next(v for v in endpoint["Variants"] if v["VariantName"] == "Instances")
    assert serverless["GBSeconds"] == pytest.approx(3600)
    assert serverless["Cost"] == pytest.approx(3600 * 0.00002 + 7.2 * 0.016)  # 0.072 + 0.1152
    # Provisioned: two ml.m5.large for the 10 hours the endpoint has existed.
    assert instances["Hours"] == pytest.approx(10) and instances["Cost"] == pytest.approx(2 * 0.115 * 10)
    assert endpoint["Invocations"] == 4000
    assert endpoint["Cost"] == pytest.approx(0.1872 + 2.3)
    assert endpoint["CostPerMillionInvocations"] == pytest.approx((0.1872 + 2.3) / 4000 * 1e6)
    # The serverless variant on an always-on instance: the cheapest with >= 2048 MB, for 10 h.
    assert endpoint["InstanceAlternative"]["InstanceType"] == "ml.t2.medium"
    assert endpoint["InstanceAlternative"]["Cost"] == pytest.approx(0.56)
    # Break-even: 0.056 an hour / (0.1872 / 3600 per serverless invocation) = 1,076.9 an hour.
    assert endpoint["BreakEvenInvocationsPerHour"] == pytest.approx(0.056 / (0.1872 / 3600))
    # --since cuts the window: 2 h of instances.
    since = cost_report(open_readonly(tmp_path / "coldbrew.db"), prices, "mixed", now - 2 * 3600, now=now)
    assert since["Endpoints"][0]["Hours"] == pytest.approx(2)


def test_simulate_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    from coldbrew.cli import main
    from tests.support import REPO

    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", str(REPO / "examples/specs/lambda-arm-1m.toml"), "--json"])
    assert exit_info.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["invocations"] == 1_000_000


def test_the_shipped_prices_say_they_are_not_the_default_regions() -> None:
    prices = load_prices()
    assert (prices.region, prices.date) == ("us-east-2", "2022-04-21")
    assert prices.region_note("us-east-2") is None
    note = prices.region_note("us-east-1")
    assert note == "us-east-2 prices, not us-east-1's: COLDBREW_PRICES=FILE for your own"


def test_an_async_endpoints_instances_are_priced_by_the_hours_they_were_held(
    tmp_path: Path,
    prices,  # type: ignore[no-untyped-def]
) -> None:
    from coldbrew.control.store import Store, dumps
    from coldbrew.metering.query import cost_report, open_readonly

    now = 1_700_000_000.0
    store = Store(tmp_path / "coldbrew.db")
    deployment = {
        "ConfigName": "c",
        "Models": {},
        "Config": {
            "ProductionVariants": [
                {
                    "VariantName": "v",
                    "ModelName": "m",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 2,
                }
            ],
            "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://b/out"}},
        },
    }
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO endpoints "
            "(name_key, name, arn, created_at, modified_at, status, config_name, deployment) "
            "VALUES ('queue', 'queue', 'arn', ?, ?, 'InService', 'c', ?)",
            [now - 10 * 3600, now - 10 * 3600, dumps(deployment)],
        )
        # One ml.m5.large (8,192 MB) held for 30 minutes in the 10 hours: the queue scaled it to zero.
        conn.execute(
            "INSERT INTO meter_minutes (endpoint, variant, minute, serverless, memory_mb, invocations, "
            "held_mb_s) VALUES ('queue', 'v', ?, 0, 8192, 500, ?)",
            [int(now - 3600) // 60 * 60, 8192 * 1800],
        )
    store.close()
    report = cost_report(open_readonly(tmp_path / "coldbrew.db"), prices, "queue", None, now=now)
    (variant,) = report["Endpoints"][0]["Variants"]
    assert variant["Hours"] == pytest.approx(0.5)
    assert variant["Cost"] == pytest.approx(0.115 * 0.5)
