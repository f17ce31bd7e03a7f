"""The fuzzer (tests/hardening/fuzzing.py) in the suite: a bounded, reproducible run against a real
server. ``bench/fuzz.py`` runs the same generators for tens of thousands of requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.hardening.fuzzing import ENDPOINT, Request, any_request, check
from tests.support import ColdbrewServer, deploy_serverless, wait_for_status

# Limits that keep what the fuzzer manages to create small on a shared machine (and that it meets).
FUZZ_ENV = {
    "COLDBREW_MAX_ENDPOINTS": "10",
    "COLDBREW_MAX_MODELS": "200",
    "COLDBREW_MAX_ENDPOINT_CONFIGS": "200",
    "COLDBREW_MAX_TRANSFORM_JOBS": "3",
    "COLDBREW_MAX_INSTANCES_PER_VARIANT": "1",
}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, model_archive: tuple[Path, Any]) -> Iterator[str]:
    server = ColdbrewServer(tmp_path_factory.mktemp("fuzz") / "data", env=FUZZ_ENV).start()
    sm = server.client("sagemaker")
    deploy_serverless(sm, ENDPOINT, str(model_archive[0]), max_concurrency=2)
    wait_for_status(sm, ENDPOINT, "InService")
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    # The timeout is the hang detector: every answer here takes milliseconds.
    with httpx.Client(timeout=30) as http:
        yield http


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(sent=any_request(huge=20_000))
def test_no_request_gets_a_5xx_or_hangs(fuzzed: str, client: httpx.Client, sent: Request) -> None:
    check(client, fuzzed, sent)
