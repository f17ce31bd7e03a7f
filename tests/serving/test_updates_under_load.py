"""Updates and faults lose nothing (issue 14, point 6): UpdateEndpoint and
UpdateEndpointWeightsAndCapacities under load with cold starts in flight fail no invocation, and
after the updates and DeleteEndpoint no worker is left and the memory budget is back to 0; the warm
workers of a zygote that died are never handed a request.

Live: a real server on loopback, real boto3 clients with retries off, real workers.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_diabetes

from tests.support import ColdbrewServer, wait_for_status, worker_pids, zygote_of

ROWS = load_diabetes(return_X_y=True)[0][:2].tolist()
THREADS = 4
"""Invoking threads, each with one invocation at a time: never past any variant's MaxConcurrency."""
# Environments come and go all the time: a short keep-alive and a slow load keep cold starts in flight.
ENVIRONMENT = {"COLDBREW_IDLE_TIMEOUT_S": "0.2", "LOAD_SLEEP_S": "0.3"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdbrewServer]:
    srv = ColdbrewServer(tmp_path_factory.mktemp("updates") / "data").start()
    yield srv
    srv.stop()


def budget_used_mb(server: ColdbrewServer) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "coldbrew_memory_budget_used_megabytes":
                return float(sample.value)
    raise AssertionError("no coldbrew_memory_budget_used_megabytes in /metrics")


def endpoint_sample(server: ColdbrewServer, name: str, endpoint: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
        and sample.labels.get("EndpointName") == endpoint
        and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def environment_starts(server: ColdbrewServer, endpoint: str) -> float:
    return endpoint_sample(server, "coldbrew_scaling_environment_starts_total", endpoint)


def busy_environments(server: ColdbrewServer, endpoint: str) -> float:
    return endpoint_sample(server, "coldbrew_scaling_environments", endpoint, state="busy")


def wait_until(check: Any, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


class Load:
    """``THREADS`` clients invoking ``endpoint`` back to back, with pauses that let environments go
    idle past their keep-alive (so later invocations cold-start)."""

    def __init__(self, server: ColdbrewServer, endpoint: str) -> None:
        self.runtime = server.client("sagemaker-runtime", read_timeout=120)
        self.endpoint = endpoint
        self.stop = threading.Event()
        self.ok = 0
        self.variants: set[str] = set()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(THREADS)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        body = json.dumps({"rows": ROWS})
        while not self.stop.is_set():
            if rng.random() < 0.15:
                time.sleep(rng.uniform(0.2, 0.5))  # idle long enough for a release
            try:
                response = self.runtime.invoke_endpoint(
                    EndpointName=self.endpoint, Body=body, ContentType="application/json"
                )
                response["Body"].read()
                with self._lock:
                    self.ok += 1
                    self.variants.add(response["InvokedProductionVariant"])
            except ClientError as exc:
                with self._lock:
                    self.errors.append(str(exc))

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        start = self.ok
        assert wait_until(lambda: self.ok >= start + count, timeout), self.errors[:5]


def create_model(sm: Any, name: str, archive: Path, **environment: str) -> None:
    sm.create_model(
        ModelName=name,
        PrimaryContainer={
            "Image": "coldbrew/sklearn",
            "ModelDataUrl": archive.as_uri(),
            "Environment": {**ENVIRONMENT, **environment},
        },
        ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew",
    )


def serverless(variant: str, model: str, provisioned: int = 0, weight: float = 1.0) -> dict[str, Any]:
    config: dict[str, Any] = {"MemorySizeInMB": 1024, "MaxConcurrency": THREADS}
    if provisioned:
        config["ProvisionedConcurrency"] = provisioned
    return {
        "VariantName": variant,
        "ModelName": model,
        "InitialVariantWeight": weight,
        "ServerlessConfig": config,
    }


def test_updates_under_load_fail_nothing_and_leave_nothing(
    server: ColdbrewServer, scripted_archive: Path
) -> None:
    sm = server.client()
    before = worker_pids(server)
    create_model(sm, "upd-a", scripted_archive)
    create_model(sm, "upd-b", scripted_archive, GENERATION="b")
    sm.create_endpoint_config(EndpointConfigName="upd-1", ProductionVariants=[serverless("A", "upd-a")])
    sm.create_endpoint_config(
        EndpointConfigName="upd-2", ProductionVariants=[serverless("B", "upd-b", provisioned=1)]
    )
    sm.create_endpoint_config(
        EndpointConfigName="upd-3",
        ProductionVariants=[
            serverless("A", "upd-a"),
            {
                "VariantName": "I",
                "ModelName": "upd-b",
                "InitialVariantWeight": 1.0,
                "InstanceType": "ml.t2.medium",
                "InitialInstanceCount": 1,
            },
        ],
    )
    sm.create_endpoint(EndpointName="upd", EndpointConfigName="upd-1")
    wait_for_status(sm, "upd", "InService")
    with Load(server, "upd") as load:
        load.wait_for(20)
        for config in ("upd-2", "upd-3", "upd-1", "upd-2", "upd-3", "upd-1"):
            sm.update_endpoint(EndpointName="upd", EndpointConfigName=config)
            wait_for_status(sm, "upd", "InService", timeout=120)
            load.wait_for(10)
            if config == "upd-2":
                sm.update_endpoint_weights_and_capacities(
                    EndpointName="upd",
                    DesiredWeightsAndCapacities=[
                        {
                            "VariantName": "B",
                            "ServerlessUpdateConfig": {"ProvisionedConcurrency": 2},
                        }
                    ],
                )
                wait_for_status(sm, "upd", "InService", timeout=120)
                load.wait_for(10)
            if config == "upd-3":
                sm.update_endpoint_weights_and_capacities(
                    EndpointName="upd",
                    DesiredWeightsAndCapacities=[
                        {"VariantName": "I", "DesiredInstanceCount": 2, "DesiredWeight": 2.0},
                        {"VariantName": "A", "DesiredWeight": 0.5},
                    ],
                )
                wait_for_status(sm, "upd", "InService", timeout=120)
                load.wait_for(10)
        described = sm.describe_endpoint(EndpointName="upd")
    assert load.errors == []
    assert load.variants == {"A", "B", "I"}
    assert "FailureReason" not in described
    sm.delete_endpoint(EndpointName="upd")
    sm.get_waiter("endpoint_deleted").wait(
        EndpointName="upd", WaiterConfig={"Delay": 0.2, "MaxAttempts": 600}
    )
    assert wait_until(lambda: not worker_pids(server) - before), worker_pids(server) - before
    assert wait_until(lambda: budget_used_mb(server) == 0), budget_used_mb(server)


def zygote_pid(server: ColdbrewServer) -> int:
    assert server.process is not None
    for child in psutil.Process(server.process.pid).children():
        if "coldbrew.worker.zygote" in " ".join(child.cmdline()):
            return child.pid
    raise AssertionError("no zygote")


def test_warm_workers_of_a_dead_zygote_get_no_request(server: ColdbrewServer, scripted_archive: Path) -> None:
    sm = server.client()
    runtime = server.client("sagemaker-runtime", read_timeout=120)
    create_model(sm, "orphans", scripted_archive, COLDBREW_IDLE_TIMEOUT_S="600", LOAD_SLEEP_S="0")
    sm.create_endpoint_config(
        EndpointConfigName="orphans",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "orphans",
                "ServerlessConfig": {
                    "MemorySizeInMB": 1024,
                    "MaxConcurrency": 3,
                    "ProvisionedConcurrency": 3,
                },
            }
        ],
    )
    sm.create_endpoint(EndpointName="orphans", EndpointConfigName="orphans")
    wait_for_status(sm, "orphans", "InService")
    body = json.dumps({"rows": ROWS})
    pids = set()
    for _ in range(10):
        reply = runtime.invoke_endpoint(EndpointName="orphans", Body=body, ContentType="application/json")
        pids.add(json.loads(reply["Body"].read())["pid"])
    zygote = zygote_pid(server)
    forked = {pid for pid in pids if zygote_of(psutil.Process(pid).ppid()) == zygote}
    assert forked
    # One invocation is in flight on a forked worker when its zygote dies: it finishes.
    in_flight: list[Any] = []

    def slow() -> None:
        slow_body = json.dumps({"rows": ROWS, "sleep": 3})
        try:
            reply = runtime.invoke_endpoint(
                EndpointName="orphans", Body=slow_body, ContentType="application/json"
            )
            in_flight.append(json.loads(reply["Body"].read())["pid"])
        except ClientError as exc:
            in_flight.append(str(exc))

    thread = threading.Thread(target=slow)
    thread.start()
    assert wait_until(lambda: busy_environments(server, "orphans") == 1)
    starts = environment_starts(server, "orphans")
    psutil.Process(zygote).kill()
    # A SIGKILL takes effect when the kernel gets round to it, and the gateway hears of it from its
    # socket: until then its forked workers are as good as any. Their replacements starting is the
    # sign that the gateway has retired them.
    assert wait_until(lambda: environment_starts(server, "orphans") > starts)
    # The next invocations, at once and for a while, all succeed: none is handed to a worker of
    # the dead zygote that is shutting down.
    errors, served = [], set()
    for _ in range(30):
        try:
            reply = runtime.invoke_endpoint(EndpointName="orphans", Body=body, ContentType="application/json")
            served.add(json.loads(reply["Body"].read())["pid"])
        except ClientError as exc:
            errors.append(str(exc))
    thread.join()
    assert errors == []
    assert len(in_flight) == 1 and isinstance(in_flight[0], int), in_flight
    assert not served & forked
    sm.delete_endpoint(EndpointName="orphans")
    sm.get_waiter("endpoint_deleted").wait(
        EndpointName="orphans", WaiterConfig={"Delay": 0.2, "MaxAttempts": 600}
    )
    assert wait_until(lambda: budget_used_mb(server) == 0), budget_used_mb(server)
