"""The simulator's batch pricing: the seed article's figures through ``coldbrew simulate``, and the
job arithmetic (start-up, workers, the Fargate minimum) by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coldbrew.metering.prices import load_prices
from coldbrew.simulate import load_spec, simulate
from coldbrew.simulate.report import build_report
from coldbrew.simulate.spec import SimulationSpec
from tests.support import REPO

SEED_SPEC = REPO / "examples" / "specs" / "random-forest-10k-a-day.toml"


def _simulate_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from coldbrew.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", *args])
    out = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), out.out, out.err


def _options(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in report["batch"]["options"]}


def test_seed_batch_figures_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """ "Serverless Machine Learning Inference": a day of 10,000 x 200 ms is $0.0146 on Fargate and
    $0.067 on Batch Transform (and $0.019 on Lambda), from the shipped prices."""
    code, out, err = _simulate_cli(capsys, str(SEED_SPEC), "--json")
    assert code == 0, err
    report = json.loads(out)
    batch = report["batch"]
    # The requests and their duration come from the simulated traffic: 300,000 in 30 days, 200 ms.
    assert (batch["requests_per_day"], batch["duration_ms"], batch["work_seconds_per_day"]) == (
        10_000,
        200,
        2000,
    )
    prices = load_prices()
    options = _options(report)
    transform, fargate, on_lambda = options["batch_transform"], options["fargate"], options["lambda"]
    # Batch Transform: one ml.m5.large, 100 s of start-up + 2,000 s = 2,100 s at 0.115 an hour.
    assert transform["billed_seconds_per_job"] == 2100
    assert transform["cost_per_day"] == pytest.approx(
        prices.batch_transform_hourly("ml.m5.large") * 2100 / 3600
    )
    assert round(transform["cost_per_day"], 3) == 0.067
    # Fargate: 0.5 vCPU and 1 GB, 130 s + 2,000 s = 2,130 s.
    rates = prices.fargate_arch("x86")
    assert fargate["billed_seconds_per_job"] == 2130
    assert fargate["cost_per_day"] == pytest.approx(
        (0.5 * rates.per_vcpu_hour + rates.per_gb_hour) * 2130 / 3600
    )
    assert round(fargate["cost_per_day"], 4) == 0.0146
    # Lambda at the spec's 512 MB, one invocation per request: the article's $0.019.
    assert on_lambda["memory_mb"] == 512 and round(on_lambda["cost_per_day"], 3) == 0.019
    # Per month is 30 days of it; the real-time options are still there.
    assert transform["cost_per_month"] == pytest.approx(30 * transform["cost_per_day"])
    assert any(a["option"].startswith("SageMaker Serverless") for a in report["alternatives"])


def test_seed_batch_table(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = _simulate_cli(capsys, str(SEED_SPEC))
    assert code == 0, err
    assert "As batch: 10,000 requests x 200 ms a day (2,000 s of work) in 1 job" in out
    for row in ("Batch Transform 1 x ml.m5.large", "Fargate 0.5 vCPU 1 GB x86", "0.0671", "0.0146", "0.0187"):
        assert row in out, row


def _spec(batch: dict[str, Any], **update: Any) -> SimulationSpec:
    base: dict[str, Any] = {
        "days": 1,
        "memory_mb": 1024,
        "cold_start_s": 1.0,
        "model_latency": {"fixed_s": 0.2},
        "traffic": {"windows": [{"per_day": 1000}]},
        "compare": {"instances": ["ml.t2.medium"], "lambda_archs": ["x86"]},
        "batch": batch,
    }
    base.update(update)
    return SimulationSpec.model_validate(base)


def _batch(spec: SimulationSpec) -> dict[str, dict[str, Any]]:
    return _options(build_report(simulate(spec), load_prices()))


def test_many_small_jobs_pay_the_fargate_minimum_and_each_start_up() -> None:
    # 1,000 x 200 ms = 200 s of work a day in 100 jobs of 2 s: Fargate bills each a minute, Batch
    # Transform the 2 s plus its 30 s start-up.
    options = _batch(
        _spec(
            {"jobs_per_day": 100, "transform_startup_s": 30, "fargate_vcpu": 0.25, "fargate_memory_gb": 0.5}
        )
    )
    fargate, transform = options["fargate"], options["batch_transform"]
    assert fargate["seconds_per_job"] == pytest.approx(2) and fargate["billed_seconds_per_job"] == 60
    assert fargate["cost_per_day"] == pytest.approx(100 * (0.25 * 0.04048 + 0.5 * 0.004445) * 60 / 3600)
    assert transform["billed_seconds_per_job"] == 32
    assert transform["cost_per_day"] == pytest.approx(100 * 0.115 * 32 / 3600)
    # One job of the same work is billed its 200 s.
    one = _batch(_spec({"fargate_vcpu": 0.25, "fargate_memory_gb": 0.5}))["fargate"]
    assert one["billed_seconds_per_job"] == 200


def test_workers_share_the_work_and_each_instance_pays_its_start_up() -> None:
    # 2 instances x 2 concurrent transforms: 200 s of work in 50 s, each instance billed 10 + 50 s.
    transform = _batch(
        _spec(
            {
                "instance_type": "ml.c5.xlarge",
                "instance_count": 2,
                "max_concurrent_transforms": 2,
                "transform_startup_s": 10,
            }
        )
    )["batch_transform"]
    assert transform["billed_seconds_per_job"] == 60
    assert transform["cost_per_day"] == pytest.approx(2 * 0.204 * 60 / 3600)


def test_the_batch_section_may_give_its_own_workload() -> None:
    options = _batch(_spec({"requests_per_day": 36_000, "duration_ms": 100, "lambda_memory_mb": 1024}))
    # 36,000 x 0.1 s = 3,600 s: an hour of an ml.m5.large, of a 0.5 vCPU / 1 GB task.
    assert options["batch_transform"]["cost_per_day"] == pytest.approx(0.115)
    assert options["fargate"]["cost_per_day"] == pytest.approx(0.5 * 0.04048 + 0.004445)
    assert options["lambda"]["cost_per_day"] == pytest.approx(
        36_000 * 0.1 * 0.0000166667 + 36_000 * 0.0000002
    )


def test_bad_batch_sections_are_refused_with_what_to_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.toml"
    traffic = "days = 1\n[traffic]\n[[traffic.windows]]\nper_day = 10\n"
    spec.write_text(traffic + "[batch]\nfargate_vcpu = 0.25\nfargate_memory_gb = 4\n")
    code, _, err = _simulate_cli(capsys, str(spec))
    assert code == 2 and "takes 0.5, 1, 2 GB, not 4" in err
    spec.write_text(traffic + '[batch]\ninstance_type = "ml.t2.medium"\n')
    code, _, err = _simulate_cli(capsys, str(spec))
    assert code == 2 and "no Batch Transform price for instance type ml.t2.medium" in err
    # Without a [batch] section the report has none.
    spec.write_text(traffic)
    code, out, _ = _simulate_cli(capsys, str(spec), "--json")
    assert code == 0 and json.loads(out)["batch"] is None


def test_the_seed_spec_loads_its_batch_section() -> None:
    batch = load_spec(SEED_SPEC).batch
    assert batch is not None
    assert (batch.instance_type, batch.fargate_vcpu, batch.fargate_memory_gb) == ("ml.m5.large", 0.5, 1)
