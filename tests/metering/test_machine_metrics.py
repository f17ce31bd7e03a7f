"""Machine-wide gauges at /metrics: the zygotes' memory and the memory budget."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ColdbrewServer, deploy_serverless, wait_for_status


def scrape(server: ColdbrewServer) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name.startswith("coldbrew_")
    }


def test_zygote_memory_and_budget_are_exported(
    server: ColdbrewServer, sm: Any, model_archive: tuple[Path, Any]
) -> None:
    deploy_serverless(sm, "gauged", model_archive[0].as_uri(), memory=2048)
    wait_for_status(sm, "gauged", "InService")
    deadline = time.monotonic() + 30
    values = scrape(server)
    while values["coldbrew_zygote_resident_bytes"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        values = scrape(server)
    assert values["coldbrew_zygote_resident_bytes"] > 50 * 2**20  # numpy and scikit-learn imported
    assert values["coldbrew_memory_budget_megabytes"] > 0
    # The worker that passed the load check stays warm, and its memory size is in the budget.
    assert values["coldbrew_memory_budget_used_megabytes"] >= 2048
    runtime = server.client("sagemaker-runtime")
    runtime.invoke_endpoint(EndpointName="gauged", Body=",".join(["0.01"] * 10), ContentType="text/csv")
    assert scrape(server)["coldbrew_memory_budget_used_megabytes"] >= 2048
