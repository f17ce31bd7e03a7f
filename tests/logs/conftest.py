"""One coldbrew server for the logs tests, a model that prints, and clients configured the way
users configure them: ``AWS_ENDPOINT_URL`` and nothing else."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support import ColdbrewServer, deploy_serverless, tar_gz, wait_for_status

CAP_BYTES = 200_000
"""COLDBREW_LOGS_MAX_BYTES_PER_ENDPOINT of the test server: a chatty model passes it in a second."""

# A model that writes to stdout and stderr as it loads and as it predicts, driven by the request:
# {"marker": "...", "spam": n (lines to print), "hog_mb": n}; FAIL_TO_LOAD makes model_fn fail.
INFERENCE_PY = textwrap.dedent("""
    import json
    import os
    import sys
    import time

    print("printer: importing on stdout")
    print("printer: importing on stderr", file=sys.stderr)

    def model_fn(model_dir):
        if os.environ.get("FAIL_TO_LOAD"):
            print("printer: about to fail", file=sys.stderr)
            raise RuntimeError(os.environ["FAIL_TO_LOAD"])
        print("printer: model loaded")
        return "model"

    def input_fn(body, content_type):
        return json.loads(body)

    def predict_fn(data, model):
        marker = data.get("marker", "")
        print(f"predict on stdout {marker}")
        print(f"predict on stderr {marker}", file=sys.stderr)
        for i in range(data.get("spam", 0)):
            print(f"spam {marker} {i:06d} " + "x" * 80)
        if data.get("hog_mb"):
            hog = bytearray(data["hog_mb"] * 1024 * 1024)
            for page in range(0, len(hog), 4096):
                hog[page] = 1
            time.sleep(3)
        return {"ok": True, "pid": os.getpid()}

    def output_fn(prediction, accept):
        return json.dumps(prediction), "application/json"
""")


def group(endpoint: str) -> str:
    return f"/aws/sagemaker/Endpoints/{endpoint}"


@pytest.fixture(scope="package")
def printer_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("printer") / "model.tar.gz"
    path.write_bytes(tar_gz({"code/inference.py": INFERENCE_PY.encode()}))
    return path


@pytest.fixture(scope="package")
def logs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdbrewServer]:
    env = {"COLDBREW_LOGS_MAX_BYTES_PER_ENDPOINT": str(CAP_BYTES)}
    server = ColdbrewServer(tmp_path_factory.mktemp("logs") / "data", env=env).start()
    yield server
    server.stop()


def aws_env(server: ColdbrewServer) -> dict[str, str]:
    """What a user sets: the endpoint URL, and credentials and a region if they have none."""
    return {
        "AWS_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": "any",
        "AWS_SECRET_ACCESS_KEY": "any",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@pytest.fixture
def logs(logs_server: ColdbrewServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``boto3.client("logs")`` with only AWS_ENDPOINT_URL pointing at coldbrew."""
    for name, value in aws_env(logs_server).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", raising=False)
    return boto3.client("logs")


def invoke(server: ColdbrewServer, endpoint: str, **request: Any) -> dict[str, Any]:
    runtime = server.client("sagemaker-runtime", read_timeout=60)
    reply = runtime.invoke_endpoint(
        EndpointName=endpoint, Body=json.dumps(request), ContentType="application/json"
    )
    answer: dict[str, Any] = json.loads(reply["Body"].read())
    return answer


def deploy(server: ColdbrewServer, endpoint: str, archive: Path, **options: Any) -> None:
    sm = server.client("sagemaker")
    deploy_serverless(sm, endpoint, archive.as_uri(), **options)


@pytest.fixture(scope="package")
def printer(logs_server: ColdbrewServer, printer_archive: Path) -> str:
    """An InService endpoint of the printing model, invoked once with marker "first"."""
    deploy(logs_server, "printer", printer_archive)
    wait_for_status(logs_server.client("sagemaker"), "printer", "InService")
    invoke(logs_server, "printer", marker="first")
    return "printer"


def messages_of(logs: Any, endpoint: str, **options: Any) -> list[str]:
    """Every event of the endpoint's group, through FilterLogEvents' pages."""
    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group(endpoint), **options)
    return [e["message"] for page in pages for e in page["events"]]


def wait_for_message(logs: Any, endpoint: str, text: str, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = messages_of(logs, endpoint)
        except logs.exceptions.ResourceNotFoundException:
            found = []
        if any(text in m for m in found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no event with {text!r} in {group(endpoint)}: {found[-20:]}")
        time.sleep(0.05)
