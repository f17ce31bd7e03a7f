"""Hedged cold starts and the machine's memory budget, with real workers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support import ColdbrewServer, config_name, deploy_serverless, wait_for_status, worker_pids

ROWS = [[0.01] * 10]


def call(runtime: Any, name: str, **payload: Any) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    response = runtime.invoke_endpoint(
        EndpointName=name, Body=json.dumps({"rows": ROWS, **payload}), ContentType="application/json"
    )
    return json.loads(response["Body"].read()), time.perf_counter() - started


def test_hedged_cold_start(sm: Any, server: ColdbrewServer, scripted_archive: Path) -> None:
    runtime = server.client("sagemaker-runtime", read_timeout=60)
    # Loading this model takes 2 s, so a busy environment that frees up first wins the race (each
    # cold start loads it: no template).
    deploy_serverless(
        sm,
        "hedge",
        scripted_archive.as_uri(),
        max_concurrency=2,
        environment={"LOAD_SLEEP_S": "2", "COLDBREW_TEMPLATES": "false"},
    )
    wait_for_status(sm, "hedge", "InService")
    first, _ = call(runtime, "hedge")
    before = worker_pids(server)
    with ThreadPoolExecutor(2) as pool:
        busy = pool.submit(call, runtime, "hedge", sleep=0.5)
        time.sleep(0.1)
        hedged, elapsed = call(runtime, "hedge")
        busy.result()
    assert hedged["pid"] == first["pid"]  # served by the environment that became idle
    assert elapsed < 1.5  # well before the 2 s model load would have finished
    # The environment started for it still joins the pool.
    deadline = time.monotonic() + 10
    while len(worker_pids(server) - before) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(worker_pids(server) - before) == 1


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdbrewServer]:
    # Room for three 1 GB environments beside the zygotes, whose memory comes out of the budget
    # too (a few hundred MB), but not for four.
    server = ColdbrewServer(
        tmp_path_factory.mktemp("budget") / "data", env={"COLDBREW_MEMORY_BUDGET_MB": "3584"}
    ).start()
    yield server
    server.stop()


def test_memory_budget_evicts_least_recently_used_then_throttles(
    budget_server: ColdbrewServer, scripted_archive: Path
) -> None:
    sm, runtime = budget_server.client(), budget_server.client("sagemaker-runtime", read_timeout=60)
    for name in ("a", "b", "c", "d"):
        deploy_serverless(sm, name, scripted_archive.as_uri(), memory=1024, max_concurrency=2)
    for name in ("a", "b", "c", "d"):
        wait_for_status(sm, name, "InService")
    pids = {}
    for name in ("a", "b", "c"):  # a is now the least recently used
        pids[name] = call(runtime, name)[0]["pid"]
        time.sleep(0.05)
    assert set(pids.values()) <= worker_pids(budget_server)
    pids["d"] = call(runtime, "d")[0]["pid"]  # needs room: a's idle environment goes
    deadline = time.monotonic() + 5
    while pids["a"] in worker_pids(budget_server) and time.monotonic() < deadline:
        time.sleep(0.05)
    live = worker_pids(budget_server)
    assert pids["a"] not in live
    assert {pids["b"], pids["c"], pids["d"]} <= live

    # With every environment in the budget busy, a cold start has nowhere to go.
    with ThreadPoolExecutor(3) as pool:
        busy = [pool.submit(call, runtime, name, sleep=2) for name in ("b", "c", "d")]
        time.sleep(0.5)
        with pytest.raises(ClientError) as excinfo:
            call(runtime, "a")
        for future in busy:
            future.result()
    error = excinfo.value.response
    assert error["Error"]["Code"] == "ThrottlingException"
    assert "memory budget of 3584 MB" in error["Error"]["Message"]
    # Once they are idle again, a gets its room back.
    assert call(runtime, "a")[0]["predictions"]


def test_keepalive_policy_per_endpoint(sm: Any, server: ColdbrewServer, scripted_archive: Path) -> None:
    runtime = server.client("sagemaker-runtime", read_timeout=60)
    # Adaptive with no history yet falls back to the fixed idle timeout (1 s here): scale to zero.
    deploy_serverless(
        sm,
        "adaptive",
        scripted_archive.as_uri(),
        environment={"COLDBREW_KEEPALIVE_POLICY": "adaptive", "COLDBREW_IDLE_TIMEOUT_S": "1"},
    )
    wait_for_status(sm, "adaptive", "InService")
    body, _ = call(runtime, "adaptive")
    assert body["pid"] in worker_pids(server)
    deadline = time.monotonic() + 10
    while body["pid"] in worker_pids(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert body["pid"] not in worker_pids(server)


@pytest.mark.parametrize(
    "key, value, accepted",
    [
        ("COLDBREW_KEEPALIVE_POLICY", "forever", "use one of fixed, adaptive"),
        ("COLDBREW_IDLE_TIMEOUT_S", "soon", "a number of seconds greater than 0"),
        ("COLDBREW_IDLE_TIMEOUT_S", "-5", "a number of seconds greater than 0"),
        ("COLDBREW_TEMPLATES", "sometimes", "use true or false"),
    ],
)
def test_bad_endpoint_setting_fails_create_endpoint_naming_the_key(
    sm: Any, scripted_archive: Path, key: str, value: str, accepted: str
) -> None:
    # Once silently replaced by the server's default; now refused before anything is deployed.
    with pytest.raises(ClientError) as excinfo:
        deploy_serverless(sm, "bad-setting", scripted_archive.as_uri(), environment={key: value})
    error = excinfo.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert f"Model bad-setting: Environment variable {key}={value!r} is not valid: " in error["Message"]
    assert accepted in error["Message"]
    assert "bad-setting" not in {e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]}
    sm.delete_endpoint_config(EndpointConfigName=config_name("bad-setting"))
    sm.delete_model(ModelName="bad-setting")


def test_model_that_stops_loading_fails_the_invocation_not_the_server(
    sm: Any, server: ColdbrewServer, scripted_archive: Path, tmp_path: Path
) -> None:
    runtime = server.client("sagemaker-runtime", read_timeout=60)
    marker = tmp_path / "broken"
    deploy_serverless(
        sm,
        "flaky-load",
        scripted_archive.as_uri(),
        max_concurrency=3,
        # Templates off: with one, later cold starts would not load the model again.
        environment={
            "FAIL_IF_EXISTS": str(marker),
            "COLDBREW_IDLE_TIMEOUT_S": "0.5",
            "COLDBREW_TEMPLATES": "false",
        },
    )
    wait_for_status(sm, "flaky-load", "InService")
    # The worker that passed the load check serves first; once released, the variant is at zero.
    warm_pid = call(runtime, "flaky-load")[0]["pid"]
    deadline = time.monotonic() + 10
    while warm_pid in worker_pids(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert warm_pid not in worker_pids(server)
    marker.touch()  # from now on every cold start fails to load the model
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(call, runtime, "flaky-load") for _ in range(3)]
        errors = []
        for future in futures:
            with pytest.raises(ClientError) as excinfo:
                future.result(timeout=30)
            errors.append(excinfo.value.response["Error"])
    assert {e["Code"] for e in errors} == {"ModelError"}
    assert all("the weights went missing" in e["Message"] for e in errors)
    marker.unlink()
    assert call(runtime, "flaky-load")[0]["predictions"]
