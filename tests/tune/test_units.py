"""The pure parts of ``coldbrew tune``: percentiles, pricing, the recommendation, the meter's page,
the sizing notes, the report's files, and cleanup when a run is interrupted."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coldbrew.metering.prices import load_prices
from coldbrew.tune.measure import Deployments, LevelResult, Payload, unique_name
from coldbrew.tune.meter import MeterFigures, parse_meter
from coldbrew.tune.pricing import Candidate, price_serverless, recommend
from coldbrew.tune.report import write_report
from coldbrew.tune.run import ConfigResult, tune
from coldbrew.tune.sizing import sizing_notes, threads_at
from coldbrew.tune.stats import percentile, summarize

# --- percentiles ------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 100])
def test_percentile_is_numpys_linear(q: float) -> None:
    samples = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0]
    assert percentile(samples, q) == pytest.approx(float(np.percentile(samples, q)))


def test_percentile_interpolates_and_refuses_nothing() -> None:
    assert percentile([10.0, 20.0], 50) == 15.0
    assert percentile([4.0], 99) == 4.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize() -> None:
    summary = summarize([float(x) for x in range(1, 101)])
    assert summary is not None
    assert (summary.count, summary.mean_ms, summary.max_ms) == (100, 50.5, 100.0)
    assert summary.p50_ms == pytest.approx(50.5)
    assert summary.p90_ms == pytest.approx(90.1)
    assert summary.p99_ms == pytest.approx(99.01)
    assert summarize([]) is None


# --- pricing ----------------------------------------------------------------------------------


def test_price_is_duration_times_memory_plus_data() -> None:
    prices = load_prices()
    p = prices.sagemaker_serverless
    pricing = price_serverless(2048, 100.0, 1000, 500, prices, monthly_invocations=3_000_000)
    # 2 GB x 0.1 s at the GB-second rate, plus 1,500 bytes at the per-(decimal-)GB data rate.
    per_invocation = 2 * 0.1 * p.per_gb_second + 1000 / 1e9 * p.per_gb_data_in + 500 / 1e9 * p.per_gb_data_out
    assert pricing.cost_per_invocation == pytest.approx(per_invocation)
    assert pricing.cost_per_million == pytest.approx(per_invocation * 1e6)
    assert pricing.monthly_cost == pytest.approx(per_invocation * 3e6)


def test_price_scales_with_memory_at_equal_duration() -> None:
    prices = load_prices()
    small = price_serverless(1024, 40.0, 0, 0, prices, 1)
    large = price_serverless(4096, 40.0, 0, 0, prices, 1)
    assert large.cost_per_million == pytest.approx(4 * small.cost_per_million)
    # The article's figure: 0.0000200 a second for 1 GB.
    assert price_serverless(1024, 1000.0, 0, 0, prices, 1).cost_per_invocation == pytest.approx(0.00002)


# --- the recommendation -----------------------------------------------------------------------


def c(memory: int, p99: float | None, cost: float | None, errors: int = 0) -> Candidate:
    return Candidate(memory_mb=memory, p99_ms=p99, cost_per_million=cost, errors=errors)


def test_recommends_the_cheapest_meeting_the_target() -> None:
    candidates = [c(1024, 80.0, 1.0), c(2048, 40.0, 1.5), c(3072, 30.0, 2.0)]
    assert recommend(candidates, 50.0).memory_mb == 2048
    assert recommend(candidates, 100.0).memory_mb == 1024
    assert recommend(candidates, 30.0).memory_mb == 3072
    assert recommend(candidates, None).memory_mb == 1024


def test_none_meets_the_target() -> None:
    answer = recommend([c(1024, 80.0, 1.0), c(2048, 60.0, 1.5)], 10.0)
    assert answer.memory_mb is None
    assert "no configuration meets the p99 target of 10 ms" in answer.reason
    assert "60.0 ms" in answer.reason


def test_errors_disqualify_and_ties_go_to_lower_latency_then_memory() -> None:
    assert recommend([c(1024, 5.0, 1.0, errors=1), c(2048, 9.0, 2.0)], 10.0).memory_mb == 2048
    assert recommend([c(2048, 9.0, 1.0), c(1024, 8.0, 1.0)], 10.0).memory_mb == 1024
    assert recommend([c(2048, 8.0, 1.0), c(1024, 8.0, 1.0)], 10.0).memory_mb == 1024
    assert recommend([c(1024, None, None)], 10.0).memory_mb is None
    assert recommend([], 10.0).reason == "no configuration was measured"


# --- the meter's page -------------------------------------------------------------------------

METRICS = """\
# TYPE sagemaker_Invocations counter
sagemaker_Invocations_total{EndpointName="a",VariantName="AllTraffic"} 34.0
sagemaker_Invocations_total{EndpointName="b",VariantName="AllTraffic"} 7.0
# TYPE sagemaker_ColdStarts counter
sagemaker_ColdStarts_total{EndpointName="a",VariantName="AllTraffic"} 2.0
# TYPE sagemaker_ServerlessBilledGBSeconds counter
sagemaker_ServerlessBilledGBSeconds_total{EndpointName="a",VariantName="AllTraffic"} 0.138
# TYPE sagemaker_BytesIn counter
sagemaker_BytesIn_total{EndpointName="a",VariantName="AllTraffic"} 1802.0
# TYPE sagemaker_ModelLatency_microseconds histogram
sagemaker_ModelLatency_microseconds_bucket{EndpointName="a",VariantName="AllTraffic",le="+Inf"} 34.0
sagemaker_ModelLatency_microseconds_count{EndpointName="a",VariantName="AllTraffic"} 34.0
sagemaker_ModelLatency_microseconds_sum{EndpointName="a",VariantName="AllTraffic"} 119459.0
# TYPE sagemaker_OverheadLatency_microseconds histogram
sagemaker_OverheadLatency_microseconds_sum{EndpointName="a",VariantName="AllTraffic"} 999999.0
# TYPE sagemaker_ExecutionEnvironments gauge
sagemaker_ExecutionEnvironments{EndpointName="a",VariantName="AllTraffic"} 1.0
"""


def test_parse_meter() -> None:
    a = parse_meter(METRICS, "A")
    assert (a.invocations, a.cold_starts, a.bytes_in, a.environments) == (34, 2, 1802, 1)
    assert a.billed_gb_seconds == pytest.approx(0.138)
    assert a.model_latency_sum_us == 119459.0  # not OverheadLatency's
    assert parse_meter(METRICS, "b").invocations == 7
    assert parse_meter(METRICS, "unseen") == MeterFigures(0, 0, 0, 0, 0, 0.0, 0, 0, 0.0, 0)


# --- what memory buys here --------------------------------------------------------------------


def test_sizing_notes_on_a_two_core_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert [threads_at(m) for m in (1024, 2048, 3072, 4096, 6144)] == [1, 1, 2, 2, 2]
    notes = " ".join(sizing_notes([1024, 2048, 3072, 6144], 2, {1024: 10.0, 6144: 9.8}, [1, 2]))
    assert "1,024, 2,048 MB all run with 1 thread(s)" in notes
    assert "3,072, 6,144 MB all run with 2 thread(s)" in notes
    assert "This machine has 2 core(s)" in notes and "6,144 MB" in notes
    assert "did not change with memory" in notes
    assert "At concurrency 2, 3,072, 6,144 MB run more threads" in notes


def test_sizing_notes_when_latency_falls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    notes = " ".join(sizing_notes([1024, 4096], 8, {1024: 20.0, 4096: 6.0}, [1, 4]))
    assert "fell from 20.0 ms at 1,024 MB to 6.0 ms at 4,096 MB" in notes
    assert "core(s): sizes beyond" not in notes
    assert "At concurrency" not in notes  # 4 x 2 threads fit 8 cores


# --- the report's files -----------------------------------------------------------------------


def _level(concurrency: int, latencies: list[float]) -> LevelResult:
    return LevelResult(
        concurrency=concurrency,
        sent=len(latencies),
        errors=0,
        latency=summarize(latencies),
        wall_s=1.0,
        throughput_per_s=float(len(latencies)),
        warmup_sent=concurrency,
        warmup_errors=0,
    )


class FakeSageMaker:
    """The control API calls tune makes, in memory."""

    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {
            "m": {"ModelName": "m", "PrimaryContainer": {"Image": "x", "Environment": {"A": "1"}}}
        }
        self.configs: dict[str, Any] = {}
        self.endpoints: dict[str, Any] = {}

    def describe_model(self, ModelName: str) -> dict[str, Any]:
        return self.models[ModelName]

    def create_model(self, **request: Any) -> None:
        self.models[request["ModelName"]] = request

    def delete_model(self, ModelName: str) -> None:
        del self.models[ModelName]

    def create_endpoint_config(self, **request: Any) -> None:
        self.configs[request["EndpointConfigName"]] = request

    def delete_endpoint_config(self, EndpointConfigName: str) -> None:
        del self.configs[EndpointConfigName]

    def create_endpoint(self, EndpointName: str, EndpointConfigName: str) -> None:
        self.endpoints[EndpointName] = EndpointConfigName

    def describe_endpoint(self, EndpointName: str) -> dict[str, Any]:
        if EndpointName not in self.endpoints:
            raise RuntimeError(f'Could not find endpoint "{EndpointName}".')
        return {"EndpointStatus": "InService"}

    def delete_endpoint(self, EndpointName: str) -> None:
        del self.endpoints[EndpointName]


class Body:
    def read(self) -> bytes:
        return b"1"


class InterruptingRuntime:
    """Answers ``ok`` invocations, then raises KeyboardInterrupt as Ctrl-C would."""

    def __init__(self, ok: int) -> None:
        self.left = ok

    def invoke_endpoint(self, **_request: Any) -> dict[str, Any]:
        if self.left <= 0:
            raise KeyboardInterrupt
        self.left -= 1
        return {"Body": Body()}


def test_interrupted_run_deletes_what_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("coldbrew.tune.measure.IDLE_TIMEOUT_S", 0.0)
    monkeypatch.setattr("coldbrew.tune.run.IDLE_TIMEOUT_S", 0.0)
    sm = FakeSageMaker()
    zero = MeterFigures(0, 0, 0, 0, 0, 0.0, 0, 0, 0.0, 0)
    with pytest.raises(KeyboardInterrupt):
        tune(
            sm,
            InterruptingRuntime(ok=1),
            lambda _name: zero,
            "m",
            [1024, 2048],
            [1],
            5,
            Payload(b"1", "text/csv"),
            load_prices(),
            1e6,
            None,
            lambda _label, _n: None,
            lambda _configs: [],
        )
    assert sm.endpoints == {} and sm.configs == {}
    assert set(sm.models) == {"m"}


def test_model_copy_keeps_the_container_and_sets_a_short_idle_timeout() -> None:
    sm = FakeSageMaker()
    deployments = Deployments(sm)
    name = deployments.copy_model("m", "m-tune")
    env = sm.models[name]["PrimaryContainer"]["Environment"]
    assert env["A"] == "1" and float(env["COLDBREW_IDLE_TIMEOUT_S"]) > 0
    assert sm.models[name]["PrimaryContainer"]["Image"] == "x"
    assert deployments.cleanup_models() == [] and set(sm.models) == {"m"}


def test_unique_names_fit_sagemaker() -> None:
    name = unique_name("A_very" + "-long" * 20, "2048")
    assert len(name) <= 63 and name == name.lower() and name.endswith(name[-6:])
    assert all(ch.isalnum() or ch == "-" for ch in name) and "-2048-" in name


def test_report_files_agree(tmp_path: Path) -> None:
    prices = load_prices()
    configs = []
    for memory, base in ((1024, 20.0), (2048, 12.0)):
        result = ConfigResult(
            memory_mb=memory, endpoint=f"m-tune-{memory}-abc", threads=1, cold_start_ms=300.0
        )
        result.levels = [_level(1, [base, base + 1, base + 2]), _level(4, [base * 2, base * 3])]
        result.sent = 1 + 3 + 1 + 2 + 4
        result.billed_ms_per_invocation = base
        result.billing_source = "meter"
        result.pricing = price_serverless(memory, base, 100, 10, prices, 1e6)
        configs.append(result)
    from coldbrew.tune.run import TuneResult

    recommendation = recommend([r.candidate() for r in configs], 50.0)
    tuned = TuneResult(
        model="m",
        memory_sizes=[1024, 2048],
        concurrency=[1, 4],
        invocations=3,
        latency_target_ms=50.0,
        monthly_invocations=1e6,
        payload_bytes=100,
        content_type="text/csv",
        configs=configs,
        recommendation=recommendation,
        notes=["a <note>"],
        cleanup_problems=[],
        price_region=prices.region,
        price_date=prices.date,
        currency=prices.currency,
    )
    # 1,024 MB's worst p99 is 59.8 ms (over 50), 2,048 MB's 35.9 ms: the larger one qualifies.
    assert recommendation.memory_mb == 2048
    paths = write_report(tuned, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    html = paths["html"].read_text()
    assert len(rows) == 4
    assert [s["recommended"] for s in data["summary"]] == [False, True]
    for row in rows:
        config = next(c for c in data["configs"] if c["memory_mb"] == int(row["memory_mb"]))
        level = next(lv for lv in config["levels"] if lv["concurrency"] == int(row["concurrency"]))
        assert float(row["p99_ms"]) == pytest.approx(level["latency"]["p99_ms"])
        assert float(row["cost_per_million"]) == pytest.approx(config["pricing"]["cost_per_million"])
        assert f"{level['latency']['p99_ms']:,.1f}" in html
    assert "a &lt;note&gt;" in html  # escaped
    assert '"label": "2,048 MB"' in html and "new uPlot" in html
