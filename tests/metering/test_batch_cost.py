"""Batch cost: Batch Transform jobs, Fargate tasks and Lambda against the seed article and by hand;
``coldbrew cost`` listing the transform jobs of a real store."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import botocore.session
import pytest

from coldbrew.control.store import Store
from coldbrew.metering.batch_cost import (
    check_fargate_size,
    fargate_billed_seconds,
    fargate_task_cost,
    lambda_batch_cost,
    transform_job_cost,
)
from coldbrew.metering.prices import PriceTable, load_prices
from coldbrew.metering.query import open_readonly, transform_jobs_report


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return load_prices()


def test_the_seed_articles_batch_figures_from_the_price_table(prices: PriceTable) -> None:
    """ "Serverless Machine Learning Inference": one day of 10,000 requests x 200 ms costs $0.0146 on
    Fargate and $0.067 on SageMaker Batch Transform (and $0.019 on Lambda at 512 MB)."""
    work_s = 10_000 * 0.200  # 2,000 s
    # An ml.m5.large for the work plus 100 s of start-up: 2,100 s x 0.115 / 3600 = 0.06708.
    transform = transform_job_cost("ml.m5.large", 1, work_s + 100, prices)
    assert transform == pytest.approx(prices.batch_transform_hourly("ml.m5.large") * 2100 / 3600)
    assert round(transform, 3) == 0.067
    # A 0.5 vCPU / 1 GB task for the work plus 130 s: 2,130 s x (0.5 x 0.04048 + 0.004445) / 3600.
    fargate = fargate_task_cost(0.5, 1, work_s + 130, prices)
    rates = prices.fargate_arch("x86")
    assert fargate == pytest.approx((0.5 * rates.per_vcpu_hour + 1 * rates.per_gb_hour) * 2130 / 3600)
    assert round(fargate, 4) == 0.0146
    # Lambda: 10,000 x 0.2 s x 0.5 GB x 0.0000166667 + 10,000 x 0.20/1M = 0.0186667.
    on_lambda = lambda_batch_cost(10_000, 200, 512, prices)
    assert round(on_lambda, 3) == 0.019


def test_shipped_batch_prices(prices: PriceTable) -> None:
    assert prices.fargate is not None and prices.fargate.minimum_billed_seconds == 60
    assert (prices.fargate_arch("x86").per_vcpu_hour, prices.fargate_arch("x86").per_gb_hour) == (
        0.04048,
        0.004445,
    )
    assert prices.fargate_arch("arm").per_vcpu_hour == 0.03238
    # Every Batch Transform price is for a type CreateTransformJob accepts, and there is one for
    # each such type the real-time table prices.
    model = botocore.session.get_session().get_service_model("sagemaker")
    transform_types = set(model.shape_for("TransformInstanceType").enum)
    assert set(prices.batch_transform_instances) <= transform_types
    assert set(prices.batch_transform_instances) == set(prices.sagemaker_instances) & transform_types
    with pytest.raises(KeyError, match="batch_transform_instances"):
        prices.batch_transform_hourly("ml.t2.medium")  # no Batch Transform on ml.t2
    with pytest.raises(KeyError, match="architecture"):
        prices.fargate_arch("windows")


def test_fargate_bills_at_least_a_minute(prices: PriceTable) -> None:
    hourly = 0.25 * 0.04048 + 0.5 * 0.004445
    assert fargate_billed_seconds(0, prices) == 60
    assert fargate_billed_seconds(10, prices) == 60
    assert fargate_task_cost(0.25, 0.5, 10, prices) == fargate_task_cost(0.25, 0.5, 60, prices)
    assert fargate_task_cost(0.25, 0.5, 10, prices) == pytest.approx(hourly * 60 / 3600)
    # Past the minute, per second rounded up.
    assert fargate_billed_seconds(60.2, prices) == 61
    assert fargate_task_cost(0.25, 0.5, 90, prices) == pytest.approx(hourly * 90 / 3600)
    # A user's table without the minimum bills the seconds alone.
    no_minimum = load_prices(override={"fargate": {"minimum_billed_seconds": 0}})
    assert fargate_task_cost(0.25, 0.5, 10, no_minimum) == pytest.approx(hourly * 10 / 3600)


def test_batch_transform_bills_instance_seconds_without_a_minimum(prices: PriceTable) -> None:
    assert transform_job_cost("ml.m5.large", 1, 0, prices) == 0
    assert transform_job_cost("ml.m5.large", 1, 1, prices) == pytest.approx(0.115 / 3600)
    assert transform_job_cost("ml.m5.large", 1, 0.3, prices) == pytest.approx(0.115 / 3600)  # rounded up
    # Three ml.c5.xlarge for 20 minutes each: 3 x 0.204 / 3 = 0.204.
    assert transform_job_cost("ml.c5.xlarge", 3, 1200, prices) == pytest.approx(0.204)


def test_fargate_task_sizes() -> None:
    check_fargate_size(0.25, 0.5)
    check_fargate_size(4, 30)
    with pytest.raises(ValueError, match="takes 0.5, 1, 2 GB, not 4"):
        check_fargate_size(0.25, 4)
    with pytest.raises(ValueError, match="no 3 vCPU task"):
        check_fargate_size(3, 6)


# --- coldbrew cost ---------------------------------------------------------------------------------

NOW = 1_700_000_000.0


def _job(conn: sqlite3.Connection, name: str, status: str, itype: str, count: int, **times: float) -> None:
    created = times.get("created_at", (times.get("started_at") or NOW) - 60)
    conn.execute(
        "INSERT INTO transform_jobs (name_key, name, arn, created_at, modified_at, status, spec, "
        "model_name, instance_type, instance_count, started_at, ended_at) "
        "VALUES (?, ?, ?, ?, ?, ?, '{}', 'm', ?, ?, ?, ?)",
        [
            name.lower(),
            name,
            f"arn:aws:sagemaker:us-east-1:000000000000:transform-job/{name.lower()}",
            created,
            times.get("ended_at", created),
            status,
            itype,
            count,
            times.get("started_at"),
            times.get("ended_at"),
        ],
    )


def _store_with_jobs(path: Path, now: float) -> None:
    store = Store(path / "coldbrew.db")
    with store.transaction() as conn:
        # Two ml.m5.large for 35 minutes, ended 25 minutes ago.
        _job(conn, "Nightly", "Completed", "ml.m5.large", 2, started_at=now - 3600, ended_at=now - 1500)
        # Running for 10 minutes so far on one ml.c5.xlarge.
        _job(conn, "Running", "InProgress", "ml.c5.xlarge", 1, started_at=now - 600)
        # Asked for, not started: listed at no cost.
        _job(conn, "Queued", "InProgress", "ml.m5.large", 1, created_at=now - 30)
        # Two days ago.
        _job(
            conn,
            "Old",
            "Stopped",
            "ml.m5.xlarge",
            1,
            started_at=now - 2 * 86400,
            ended_at=now - 2 * 86400 + 60,
        )
    store.close()


def test_transform_jobs_priced_by_hand(tmp_path: Path, prices: PriceTable) -> None:
    _store_with_jobs(tmp_path, NOW)
    conn = open_readonly(tmp_path / "coldbrew.db")
    jobs = {j["TransformJobName"]: j for j in transform_jobs_report(conn, prices, None, now=NOW)}
    assert list(jobs) == ["Old", "Nightly", "Running", "Queued"]  # by creation
    nightly = jobs["Nightly"]
    assert (nightly["JobSeconds"], nightly["BilledSeconds"]) == (2100, 2100)
    assert nightly["Cost"] == pytest.approx(2 * 0.115 * 2100 / 3600)  # 0.1342
    assert nightly["TransformJobStatus"] == "Completed" and nightly["InstanceCount"] == 2
    assert jobs["Running"]["BilledSeconds"] == 600 and jobs["Running"]["TransformEndTime"] is None
    assert jobs["Running"]["Cost"] == pytest.approx(0.204 * 600 / 3600)
    assert jobs["Queued"]["BilledSeconds"] == 0 and jobs["Queued"]["Cost"] == 0
    assert jobs["Queued"]["TransformStartTime"] is None
    assert jobs["Old"]["Cost"] == pytest.approx(0.23 * 60 / 3600)
    # --since 30m: the seconds inside the period. Nightly ran 5 of its minutes in it, Running all 10;
    # Old ended before it.
    since = transform_jobs_report(conn, prices, NOW - 1800, now=NOW)
    by_name = {j["TransformJobName"]: j for j in since}
    assert set(by_name) == {"Nightly", "Running", "Queued"}
    assert by_name["Nightly"]["BilledSeconds"] == 300 and by_name["Nightly"]["JobSeconds"] == 2100
    assert by_name["Nightly"]["Cost"] == pytest.approx(2 * 0.115 * 300 / 3600)
    assert by_name["Running"]["BilledSeconds"] == 600
    # One job by name, in any case.
    (one,) = transform_jobs_report(conn, prices, None, now=NOW, name="nightly")
    assert one["TransformJobName"] == "Nightly"


def test_a_job_on_an_unpriced_type_is_listed_without_a_cost(tmp_path: Path, prices: PriceTable) -> None:
    store = Store(tmp_path / "coldbrew.db")
    with store.transaction() as conn:
        _job(conn, "Gpu", "Completed", "ml.p3.2xlarge", 1, started_at=NOW - 100, ended_at=NOW)
    store.close()
    (job,) = transform_jobs_report(open_readonly(tmp_path / "coldbrew.db"), prices, None, now=NOW)
    assert job["BilledSeconds"] == 100 and job["Cost"] is None
    assert "ml.p3.2xlarge" in job["PriceNote"]


def _cost_cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    from coldbrew.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["cost", *args])
    out = capsys.readouterr()
    assert exit_info.value.code == 0, out.err
    return out.out


def test_coldbrew_cost_shows_transform_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    _store_with_jobs(tmp_path, time.time())
    report = json.loads(_cost_cli(capsys, "--data-dir", str(tmp_path), "--json"))
    jobs = {j["TransformJobName"]: j for j in report["TransformJobs"]}
    assert jobs["Nightly"]["BilledSeconds"] == 2100
    assert jobs["Nightly"]["Cost"] == pytest.approx(2 * 0.115 * 2100 / 3600)
    # A running job is billed up to now: at least the 10 minutes it had run when inserted.
    assert jobs["Running"]["BilledSeconds"] >= 600
    assert jobs["Running"]["Cost"] == pytest.approx(0.204 * jobs["Running"]["BilledSeconds"] / 3600)
    assert report["Endpoints"] == []
    table = _cost_cli(capsys, "--data-dir", str(tmp_path))
    assert "Transform jobs, priced as Batch Transform" in table
    assert "2 x ml.m5.large" in table and "2,100" in table and "0.1342" in table
    assert "Queued" in table and "Old" in table
    # --since 1d leaves out the job of two days ago; a job's name shows that job alone.
    since = json.loads(_cost_cli(capsys, "--data-dir", str(tmp_path), "--since", "1d", "--json"))
    assert {j["TransformJobName"] for j in since["TransformJobs"]} == {"Nightly", "Running", "Queued"}
    one = _cost_cli(capsys, "Nightly", "--data-dir", str(tmp_path))
    assert "Nightly" in one and "Running" not in one


def test_coldbrew_cost_without_jobs_or_their_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    Store(tmp_path / "coldbrew.db").close()
    empty = _cost_cli(capsys, "--data-dir", str(tmp_path))
    assert "Transform jobs" not in empty and "endpoint" in empty
    # A store from before migration 6 has no transform_jobs table.
    conn = sqlite3.connect(tmp_path / "coldbrew.db")
    conn.execute("DROP TABLE transform_jobs")
    conn.close()
    report = json.loads(_cost_cli(capsys, "--data-dir", str(tmp_path), "--json"))
    assert report["TransformJobs"] == []
