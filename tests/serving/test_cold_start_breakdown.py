"""The cold-start breakdown: the stages the gateway logs for every cold start (issue 18, point 3)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from coldbrew.backends.start_trace import STAGES, StartTrace, breakdown
from coldbrew.worker.messages import WorkerStages
from tests.support import ColdbrewServer, deploy_serverless, wait_for_status


def test_stages_follow_one_another_and_sum_to_the_total() -> None:
    worker = WorkerStages(running=10.004, loading=10.005, loaded=10.015, listening=10.016)
    trace = StartTrace(requested=10.001, launched=10.003, limited=10.012, reported=10.017, worker=worker)
    ms = breakdown(trace, arrived=10.0, answered=10.025)
    assert ms == {
        "admit": 1.0,
        "fork": 3.0,
        "prepare": 1.0,
        "model_load": 10.0,
        "listen": 1.0,
        "limit_wait": 0.0,
        "report": 1.0,
        "first_invoke": 8.0,
        "total": 25.0,
        "limit": 9.0,
    }
    assert sum(ms[stage] for stage in STAGES) == pytest.approx(ms["total"])


def test_a_cgroup_move_that_outlasts_the_start_is_waited_for_on_the_path() -> None:
    worker = WorkerStages(running=10.002, loading=10.003, loaded=10.005, listening=10.006)
    trace = StartTrace(requested=10.001, launched=10.002, limited=10.014, reported=10.015, worker=worker)
    ms = breakdown(trace, arrived=10.0, answered=10.020)
    assert ms["limit"] == 12.0
    assert ms["limit_wait"] == 8.0  # ready at 6 ms, moved at 14 ms
    assert ms["report"] == 1.0
    assert sum(ms[stage] for stage in STAGES) == pytest.approx(ms["total"])


def test_a_server_without_worker_steps_gets_one_start_stage() -> None:
    trace = StartTrace(requested=1.0, launched=1.1, limited=1.2, reported=2.0, worker=None)
    ms = breakdown(trace, arrived=0.9, answered=2.5)
    assert ms["start"] == pytest.approx(1000.0)
    assert "model_load" not in ms
    assert ms["admit"] + ms["start"] + ms["first_invoke"] == pytest.approx(ms["total"])


def test_every_cold_start_is_logged_with_its_stages(
    sm: Any, server: ColdbrewServer, scripted_archive: Path
) -> None:
    # The model's load sleeps 0.4 s and the first predict 0.3 s: each must land in its own stage
    # (templates off: every cold start loads the model).
    deploy_serverless(
        sm,
        "breakdown",
        scripted_archive.as_uri(),
        environment={"LOAD_SLEEP_S": "0.4", "COLDBREW_IDLE_TIMEOUT_S": "0.2", "COLDBREW_TEMPLATES": "false"},
    )
    wait_for_status(sm, "breakdown", "InService")
    before = server.log().count("cold start of breakdown/")
    runtime = server.client("sagemaker-runtime", read_timeout=60)
    for _ in range(20):  # the load check's environment may still be warm: wait for a cold start
        time.sleep(0.5)  # past the idle timeout: the environment is released
        response = runtime.invoke_endpoint(
            EndpointName="breakdown",
            Body=json.dumps({"rows": [[0.01] * 10], "sleep": 0.3}),
            ContentType="application/json",
        )
        response["Body"].read()
        if server.log().count("cold start of breakdown/") > before:
            break
    lines = [line for line in server.log().splitlines() if "cold start of breakdown/AllTraffic: " in line]
    assert len(lines) > before
    ms = {
        stage: float(value)
        for stage, _, value in (pair.partition("=") for pair in lines[-1].split(": ", 2)[-1].split())
    }
    assert set(ms) == {*STAGES, "total", "limit"}
    assert ms["model_load"] >= 400
    assert ms["first_invoke"] >= 300
    assert all(ms[stage] >= 0 for stage in STAGES if stage != "admit")
    assert sum(ms[stage] for stage in STAGES) == pytest.approx(ms["total"], abs=0.01)
