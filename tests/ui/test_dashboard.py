"""The dashboard in a real browser against a real server, after a known traffic pattern.

Numbers on the pages are compared with what the server's own APIs answer for the same window:
CloudWatch's GetMetricStatistics for the metrics, ``coldbrew cost`` for the cost, ``/metrics``
for the machine's memory budget.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import REPO, ColdbrewServer, deploy_serverless, sklearn_archive, wait_for_status
from tests.ui.conftest import Tab

ROW = "0.03,0.05,0.06,0.02,-0.04,-0.03,-0.04,-0.002,0.02,-0.01"
SECRET = "s3cr3t-token-value-never-shown"
GOOD, BAD = 30, 4


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    return sklearn_archive(tmp_path_factory.mktemp("ui-model") / "model.tar.gz")


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory, model: tuple[Path, Any]) -> Iterator[ColdbrewServer]:
    server = ColdbrewServer(tmp_path_factory.mktemp("ui") / "data").start()
    sm = server.client()
    archive = str(model[0])
    # ui-rf: the traffic pattern's endpoint, with a secret in its Environment and a short idle
    # timeout so that its first invocation is a cold start. ui-live: its environments come and go.
    deploy_serverless(sm, "ui-rf", archive, environment={"API_TOKEN": SECRET, "COLDBREW_IDLE_TIMEOUT_S": "1"})
    deploy_serverless(sm, "ui-live", archive, environment={"COLDBREW_IDLE_TIMEOUT_S": "2"})
    deploy_serverless(sm, "ui-act", archive, max_concurrency=2)
    for name in ("ui-rf", "ui-live", "ui-act"):
        wait_for_status(sm, name, "InService")
    _wait_scaled_to_zero(server, "ui-rf")
    runtime = server.client("sagemaker-runtime")
    for _ in range(GOOD):
        runtime.invoke_endpoint(EndpointName="ui-rf", ContentType="text/csv", Body=ROW)
    for _ in range(BAD):
        with pytest.raises(runtime.exceptions.ModelError):
            runtime.invoke_endpoint(EndpointName="ui-rf", ContentType="text/csv", Body="not,a,number")
    yield server
    server.stop()


def _environments(server: ColdbrewServer, endpoint: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{server.url}/ui/api/endpoints/{endpoint}/environments", timeout=10).json()
    return [e for v in answer["Variants"] for e in v["environments"]]


def _wait_scaled_to_zero(server: ColdbrewServer, endpoint: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while _environments(server, endpoint):
        assert time.monotonic() < deadline, f"{endpoint} kept its environments"
        time.sleep(0.1)


def _cloudwatch(
    server: ColdbrewServer, metric: str, start: int, end: int, **stats: Any
) -> list[dict[str, Any]]:
    namespace = "/aws/sagemaker/Endpoints" if metric == "MemoryUtilization" else "AWS/SageMaker"
    answer = server.client("cloudwatch").get_metric_statistics(
        Namespace=namespace,
        MetricName=metric,
        Dimensions=[
            {"Name": "EndpointName", "Value": "ui-rf"},
            {"Name": "VariantName", "Value": "AllTraffic"},
        ],
        StartTime=dt.datetime.fromtimestamp(start, dt.UTC),
        EndTime=dt.datetime.fromtimestamp(end, dt.UTC),
        Period=end - start,
        **stats,
    )
    points: list[dict[str, Any]] = answer["Datapoints"]
    return points


def _sum(server: ColdbrewServer, metric: str, start: int, end: int) -> float:
    return sum(p["Sum"] for p in _cloudwatch(server, metric, start, end, Statistics=["Sum"]))


def _cell(row: Any, key: str, attribute: str = "data-value") -> str:
    return str(row.locator(f'[data-k="{key}"]').get_attribute(attribute))


def test_get_slash_in_a_browser_leads_to_the_endpoints_page(tab: Tab, ui_server: ColdbrewServer) -> None:
    tab.open("/")
    assert tab.page.url == f"{ui_server.url}/ui"
    assert tab.page.title() == "Endpoints · coldbrew"


def test_the_endpoints_page_shows_what_cloudwatch_answers(tab: Tab, ui_server: ColdbrewServer) -> None:
    tab.open("/ui")
    window = tab.page.locator("#window")
    start, end = int(window.get_attribute("data-start") or 0), int(window.get_attribute("data-end") or 0)
    assert end - start == 3600
    row = tab.page.locator('tr[data-endpoint="ui-rf"]')
    assert row.locator("td.st").inner_text() == "InService"
    assert "AllTraffic: 1024 MB x2" in row.inner_text()

    invocations = int(_cell(row, "invocations"))
    assert invocations == _sum(ui_server, "Invocations", start, end) == GOOD + BAD
    assert int(_cell(row, "errors", "data-4xx")) == _sum(ui_server, "Invocation4XXErrors", start, end)
    assert int(_cell(row, "errors", "data-5xx")) == _sum(ui_server, "Invocation5XXErrors", start, end)
    setup = _cloudwatch(ui_server, "ModelSetupTime", start, end, Statistics=["SampleCount"])
    cold = int(_cell(row, "cold"))
    assert cold == sum(p["SampleCount"] for p in setup) >= 1
    [latency] = _cloudwatch(ui_server, "ModelLatency", start, end, ExtendedStatistics=["p50", "p99"])
    assert float(_cell(row, "p50")) == latency["ExtendedStatistics"]["p50"]
    assert float(_cell(row, "p99")) == latency["ExtendedStatistics"]["p99"]
    # The text is the same value in milliseconds.
    assert row.locator('[data-k="p50"]').inner_text() == f"{latency['ExtendedStatistics']['p50'] / 1000:,.2f}"

    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    cost = _coldbrew_cost(ui_server, today.isoformat())
    assert float(_cell(row, "today")) == pytest.approx(cost["ui-rf"], rel=1e-9)
    assert tab.page.locator("#total-endpoints").inner_text() == "3"
    tab.screenshot("endpoints")


def _coldbrew_cost(server: ColdbrewServer, since: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "coldbrew", "cost", "--since", since, "--json",
         "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {e["EndpointName"]: e["Cost"] for e in json.loads(done.stdout)["Endpoints"]}


def _painted(tab: Tab, selector: str) -> list[int]:
    """Per canvas under ``selector``, how many of its pixels are not transparent."""
    counts: list[int] = tab.page.evaluate(
        """(selector) => Array.from(document.querySelectorAll(selector)).map((canvas) => {
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let painted = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) painted++;
            return painted;
        })""",
        selector,
    )
    return counts


def test_the_endpoint_page_draws_its_charts_from_cloudwatch(tab: Tab, ui_server: ColdbrewServer) -> None:
    tab.open("/ui/endpoints/ui-rf")
    tab.page.wait_for_selector('#charts[data-drawn="true"]')
    figures = tab.page.locator("figure.chart")
    keys = [figures.nth(i).get_attribute("data-chart") for i in range(figures.count())]
    assert keys == [
        "invocations", "latency_avg", "overhead", "setup", "cold_starts", "errors_4xx", "memory",
        "concurrency",
    ]  # fmt: skip
    painted = _painted(tab, "figure.chart canvas")
    assert len(painted) == len(keys) and all(p > 0 for p in painted), painted
    # The chart's series are CloudWatch's datapoints for the same window and period.
    charts = httpx.get(f"{ui_server.url}/ui/api/endpoints/ui-rf/metrics?range=1h", timeout=30).json()
    invocations = next(c for c in charts["charts"] if c["key"] == "invocations")["series"][0]
    answer = ui_server.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName="Invocations",
        Dimensions=[
            {"Name": "EndpointName", "Value": "ui-rf"},
            {"Name": "VariantName", "Value": "AllTraffic"},
        ],
        StartTime=dt.datetime.fromtimestamp(charts["start"], dt.UTC),
        EndTime=dt.datetime.fromtimestamp(charts["end"], dt.UTC),
        Period=charts["period"],
        Statistics=["Sum"],
    )
    by_time = {int(p["Timestamp"].timestamp()): p["Sum"] for p in answer["Datapoints"]}
    assert {t: v for t, v in zip(charts["x"], invocations["values"], strict=True) if v} == by_time
    assert invocations["total"] == GOOD + BAD
    assert (
        tab.page.locator('figure[data-chart="invocations"] .totals').first.inner_text()
        == "AllTraffic Sum: 34"
    )

    summary = tab.page.locator("#summary")
    assert int(_cell(summary, "invocations")) == GOOD + BAD
    # The model's Environment: names shown, values never.
    config = tab.page.locator("#config").inner_text()
    assert "API_TOKEN" in config and SECRET not in tab.page.content()
    assert SECRET not in httpx.get(f"{ui_server.url}/ui/api/endpoints/ui-rf", timeout=30).text
    # Its log lines: the worker's start, and coldbrew's own line about it.
    tab.page.wait_for_function("document.querySelector('#logs').textContent.includes('environment started')")
    for range_name in ("24h", "7d"):
        tab.open(f"/ui/endpoints/ui-rf?range={range_name}")
        tab.page.wait_for_selector('#charts[data-drawn="true"]')
        assert all(p > 0 for p in _painted(tab, "figure.chart canvas"))
    tab.open("/ui/endpoints/ui-rf")
    tab.page.wait_for_selector('#charts[data-drawn="true"]')
    tab.screenshot("endpoint")
    tab.page.set_viewport_size({"width": 1400, "height": 1300})
    tab.screenshot("endpoint-top", full_page=False)


def test_the_live_view_follows_an_environment_from_start_to_release(
    tab: Tab, ui_server: ColdbrewServer
) -> None:
    tab.open("/ui/endpoints/ui-live")
    # Its first environment (the load check's) is released after its 2 s keep-alive.
    tab.page.wait_for_selector("#environments tr.none")
    runtime = ui_server.client("sagemaker-runtime")
    runtime.invoke_endpoint(EndpointName="ui-live", ContentType="text/csv", Body=ROW)
    started = tab.page.wait_for_selector(
        '#environments tr[data-state="idle"], #environments tr[data-state="busy"]'
    )
    assert started is not None
    row = started.inner_text()
    assert "demand" in row and "1024 MB" in row
    # Then released by its keep-alive, which the page shows by itself.
    tab.page.wait_for_selector("#environments tr.none")
    tab.page.wait_for_function(
        "document.querySelector('#logs').textContent.includes('idle past its keep-alive')"
    )


def test_the_cost_page_and_its_what_if_form(tab: Tab, ui_server: ColdbrewServer) -> None:
    tab.open("/ui/cost")
    row = tab.page.locator('#cost-days tr[data-endpoint="ui-rf"]')
    cells = row.locator("td[data-value]")
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert float(cells.last.get_attribute("data-value") or "nan") == pytest.approx(
        _coldbrew_cost(ui_server, today.isoformat())["ui-rf"], rel=1e-9
    )
    assert tab.page.locator('#comparison tr[data-endpoint="ui-rf"]').count() == 1
    tab.page.fill('input[name="per_day"]', "20000")
    tab.page.fill('input[name="model_latency_ms"]', "40")
    tab.page.click("#whatif-form button[type=submit]")
    table = tab.page.wait_for_selector("#whatif-table")
    assert table is not None
    serverless = tab.page.locator('#whatif-table tr[data-kind="serverless"] td[data-value]')
    instance = tab.page.locator('#whatif-table tr[data-kind="instance"] td[data-value]')
    # 20,000 a day of 40 ms at 2 GB for 30 days, as the simulator prices it.
    assert float(serverless.get_attribute("data-value") or 0) > 0
    assert float(instance.get_attribute("data-value") or 0) > 0
    tab.screenshot("cost")


def test_the_machine_page_shows_the_budget_as_metrics_does(tab: Tab, ui_server: ColdbrewServer) -> None:
    tab.open("/ui/machine")
    gauges = {}
    for family in text_string_to_metric_families(httpx.get(f"{ui_server.url}/metrics", timeout=30).text):
        for sample in family.samples:
            gauges[sample.name] = sample.value
    assert (
        int(tab.page.locator("#budget").get_attribute("data-value") or -1)
        == gauges["coldbrew_memory_budget_megabytes"]
    )
    assert (
        int(tab.page.locator("#evictions").get_attribute("data-value") or -1)
        == gauges["coldbrew_memory_budget_evictions_total"]
    )
    # ui-act's first environment (300 s keep-alive) is what the budget holds; the others are released.
    assert (
        int(tab.page.locator("#budget-used").get_attribute("data-value") or -1)
        == gauges["coldbrew_memory_budget_used_megabytes"]
    )
    zygotes = tab.page.locator("#zygotes tbody tr")
    assert zygotes.count() >= 1 and "sklearn" in zygotes.first.inner_text()
    assert tab.page.locator("#pools").inner_text().count("ui-") == 3
    tab.screenshot("machine")


def test_actions_invoke_update_and_delete_with_confirmation(
    tab: Tab, ui_server: ColdbrewServer, model: tuple[Path, Any]
) -> None:
    sm = ui_server.client()
    tab.open("/ui/endpoints/ui-act")
    # Invoke with a pasted payload: the answer is the model's.
    tab.page.fill('#invoke-form textarea[name="Body"]', ROW)
    tab.page.click("#invoke-form button[type=submit]")
    tab.page.wait_for_selector("#confirm[open]")
    assert "Invoke ui-act?" in tab.page.locator("#confirm-title").inner_text()
    tab.page.click("#confirm-ok")
    result = tab.page.wait_for_selector("#invoke-result:not([hidden])")
    assert result is not None
    body = result.inner_text().split("\n", 1)[1]
    expected = model[1].predict(np.array([[float(x) for x in ROW.split(",")]]))
    assert json.loads(body) == pytest.approx(expected.tolist())
    assert result.get_attribute("data-status") == "200"

    # A cancelled confirmation does nothing.
    tab.page.click("#delete-button")
    tab.page.wait_for_selector("#confirm[open]")
    tab.page.click("#confirm button[value=cancel]")
    assert tab.page.locator("#delete-result").is_hidden()
    assert sm.describe_endpoint(EndpointName="ui-act")["EndpointStatus"] == "InService"

    # Update its serverless config: a new endpoint config, then UpdateEndpoint.
    tab.page.fill('#update-form fieldset[data-variant="AllTraffic"] input[name="MaxConcurrency"]', "3")
    tab.page.click("#update-form button[type=submit]")
    tab.page.wait_for_selector("#confirm[open]")
    tab.page.click("#confirm-ok")
    tab.page.wait_for_selector('#update-result[data-ok="true"]')
    described = _wait_for(lambda: _serverless(sm, "ui-act", 3))
    assert described["EndpointConfigName"].startswith("ui-act-ui")
    config = sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    assert config["ProductionVariants"][0]["ServerlessConfig"] == {
        "MemorySizeInMB": 1024,
        "MaxConcurrency": 3,
    }

    # Delete it.
    tab.open("/ui/endpoints/ui-act")
    tab.page.click("#delete-button")
    tab.page.wait_for_selector("#confirm[open]")
    tab.page.click("#confirm-ok")
    tab.page.wait_for_selector('#delete-result[data-ok="true"]')
    _wait_for(lambda: _gone(sm, "ui-act"))


def _serverless(sm: Any, name: str, max_concurrency: int) -> dict[str, Any] | None:
    described: dict[str, Any] = sm.describe_endpoint(EndpointName=name)
    current = described["ProductionVariants"][0].get("CurrentServerlessConfig", {})
    if described["EndpointStatus"] == "InService" and current.get("MaxConcurrency") == max_concurrency:
        return described
    return None


def _gone(sm: Any, name: str) -> bool:
    try:
        sm.describe_endpoint(EndpointName=name)
    except sm.exceptions.ClientError:
        return True
    return False


def _wait_for(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, "the change did not happen"
        time.sleep(0.1)


def test_get_slash_stays_an_api_call_for_aws_clients(ui_server: ColdbrewServer) -> None:
    # S3's ListBuckets is GET / signed for s3: still answered by S3.
    assert "Buckets" in ui_server.client("s3").list_buckets()
    # Unsigned and not asking for HTML (curl, an SDK): not redirected.
    assert httpx.get(f"{ui_server.url}/", timeout=10).status_code != 303
    browser = httpx.get(f"{ui_server.url}/", headers={"Accept": "text/html,*/*"}, timeout=10)
    assert browser.status_code == 303 and browser.headers["location"] == "/ui"


def test_the_api_refuses_a_change_without_the_csrf_token(ui_server: ColdbrewServer) -> None:
    with httpx.Client(base_url=ui_server.url, timeout=30) as client:
        client.get("/ui")  # a session, with its token in the page
        refused = client.delete("/ui/api/endpoints/ui-live")
        assert refused.status_code == 403 and refused.json()["Code"] == "InvalidCsrfToken"
        page = client.get("/ui").text
        token = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        other_site = client.delete(
            "/ui/api/endpoints/ui-live", headers={"X-CSRF-Token": token, "Origin": "http://evil.example"}
        )
        assert other_site.status_code == 403
    assert ui_server.client().describe_endpoint(EndpointName="ui-live")["EndpointStatus"] == "InService"


def test_s3_requests_for_a_bucket_named_ui_reach_s3(ui_server: ColdbrewServer) -> None:
    """``ui`` is too short a name for an S3 bucket, so S3's answer is a refusal: what matters is that
    S3 gives it (in S3's XML), not the dashboard."""
    import botocore.exceptions

    s3 = ui_server.client("s3")
    for call in (lambda: s3.create_bucket(Bucket="ui"), lambda: s3.get_object(Bucket="ui", Key="cost"),
                 lambda: s3.list_objects_v2(Bucket="ui")):  # fmt: skip
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] in ("InvalidBucketName", "NoSuchBucket")
    # Unsigned, with an S3 request's shape: the API's answer, the same as for another such bucket.
    sdk = {"amz-sdk-invocation-id": "1", "amz-sdk-request": "attempt=1"}
    for path, headers in (("/{b}/model.tar.gz", {}), ("/{b}", {"params": "list-type=2"}), ("/{b}/cost", sdk)):
        query = dict(headers).pop("params", None)
        sent = {k: v for k, v in headers.items() if k != "params"}
        answers = [
            httpx.get(f"{ui_server.url}{path.format(b=bucket)}", params=query, headers=sent, timeout=10)
            for bucket in ("ui", "xy")
        ]
        assert answers[0].status_code == answers[1].status_code, path
        assert "text/html" not in answers[0].headers.get("content-type", ""), path
    # An unsigned browser request for a dashboard page is still the dashboard.
    page = httpx.get(f"{ui_server.url}/ui/cost", headers={"Accept": "text/html"}, timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_the_endpoint_page_shows_data_capture(
    tab: Tab, ui_server: ColdbrewServer, model: tuple[Path, Any]
) -> None:
    sm, s3 = ui_server.client(), ui_server.client("s3")
    s3.create_bucket(Bucket="capture")
    modes = [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]
    sm.create_model(
        ModelName="ui-capture", PrimaryContainer={"Image": "coldbrew/sklearn", "ModelDataUrl": str(model[0])},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew",
    )  # fmt: skip
    sm.create_endpoint_config(
        EndpointConfigName="ui-capture-config",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "ui-capture",
                             "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2}}],
        DataCaptureConfig={"EnableCapture": True, "InitialSamplingPercentage": 100,
                           "DestinationS3Uri": "s3://capture/ui", "CaptureOptions": modes},
    )  # fmt: skip
    sm.create_endpoint(EndpointName="ui-capture", EndpointConfigName="ui-capture-config")
    wait_for_status(sm, "ui-capture", "InService")
    runtime = ui_server.client("sagemaker-runtime")
    for _ in range(3):
        runtime.invoke_endpoint(EndpointName="ui-capture", ContentType="text/csv", Body=ROW)

    def written() -> float:
        for family in text_string_to_metric_families(httpx.get(f"{ui_server.url}/metrics", timeout=10).text):
            if family.name == "coldbrew_capture_records_written":
                return sum(s.value for s in family.samples)
        return 0.0

    deadline = time.monotonic() + 30
    while written() < 3:
        assert time.monotonic() < deadline, "capture wrote nothing"
        time.sleep(0.2)
    tab.open("/ui/endpoints/ui-capture")
    section = tab.page.locator("#capture")
    assert section.get_attribute("data-capturing") == "true"
    assert section.locator('[data-k="capture-state"]').inner_text() == "on"
    assert section.locator('[data-k="capture-destination"]').inner_text() == "s3://capture/ui"
    assert section.locator('[data-k="capture-sampling"]').get_attribute("data-value") == "100"
    assert "Input, Output" in section.inner_text()
    shown = int(section.locator('[data-k="capture-written"]').get_attribute("data-value") or -1)
    assert shown == written()  # the server's own counter, as /metrics has it
    assert section.locator('[data-k="capture-dropped"]').get_attribute("data-value") == "0"
    tab.screenshot("endpoint-capture")
    # An endpoint without DataCaptureConfig has no such section.
    tab.open("/ui/endpoints/ui-rf")
    assert tab.page.locator("#capture").count() == 0
