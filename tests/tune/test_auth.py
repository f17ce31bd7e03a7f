"""``coldbrew tune`` on a server with auth on: it signs with the standard AWS credentials, and a
key that may not read ``/metrics`` still gets a report, priced by the latencies it measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.auth.conftest import AuthServer, create_key
from tests.support import REPO, sklearn_archive

MODEL = "tune-auth"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AuthServer, dict[str, Any], Path]]:
    base = tmp_path_factory.mktemp("tune-auth")
    data_dir = base / "data"
    policy = base / "sagemaker-only.json"
    statement = {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"}
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [statement]}))
    made = {
        "admin": create_key(data_dir, "--admin"),
        "sagemaker-only": create_key(data_dir, "--policy", str(policy)),
    }
    # Workers keep the server's user, so they can read the model archive in the test's directory.
    env = {"COLDBREW_WORKER_IDS": "off", "COLDBREW_MODEL_ROOTS": str(base)}
    server = AuthServer(data_dir, ("--auth", "on"), env=env).start()
    try:
        archive, _ = sklearn_archive(base / "model.tar.gz")
        server.signed("sagemaker", made["admin"]).create_model(
            ModelName=MODEL,
            PrimaryContainer={"Image": "coldbrew/sklearn", "ModelDataUrl": f"file://{archive}"},
            ExecutionRoleArn="arn:aws:iam::123456789012:role/coldbrew",
        )
        (base / "row.csv").write_text("0.03,0.05,0.06,0.02,-0.04,-0.03,-0.04,0.0,0.02,-0.02\n")
        yield server, made, base
    finally:
        server.stop(timeout=90)  # a loaded machine may take a while to drain and stop


def tune(server: AuthServer, key: dict[str, str], base: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLDBREW_URL": server.url, "COLUMNS": "200", "AWS_DEFAULT_REGION": "us-east-1"}
    env.update(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
    # fmt: off
    command = [
        sys.executable, "-m", "coldbrew", "tune", MODEL, "--payload", str(base / "row.csv"),
        "--memory", "1024", "--concurrency", "1", "--invocations", "5", "--out", str(out),
    ]
    # fmt: on
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=180)


def test_with_auth_on_the_report_is_the_meters(keys: tuple[AuthServer, dict[str, Any], Path]) -> None:
    server, made, base = keys
    done = tune(server, made["admin"], base, base / "admin")
    assert done.returncode == 0, done.stdout + done.stderr
    config = json.loads((base / "admin" / "tune.json").read_text())["configs"][0]
    assert config["billing_source"] == "meter"
    assert config["meter"]["invocations"] == config["sent"] == 1 + 1 + 5
    assert config["cold_start_metered"] is True
    assert server.signed("sagemaker", made["admin"]).list_endpoints()["Endpoints"] == []


def test_a_key_without_metrics_is_priced_by_its_own_figures(
    keys: tuple[AuthServer, dict[str, Any], Path],
) -> None:
    server, made, base = keys
    done = tune(server, made["sagemaker-only"], base, base / "limited")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((base / "limited" / "tune.json").read_text())
    config = report["configs"][0]
    assert config["meter"] is None and config["billing_source"] == "client"
    assert config["scaled_to_zero"] is None and config["cold_start_metered"] is None
    assert config["pricing"]["cost_per_million"] > 0
    assert any("did not confirm it" in note for note in report["notes"])
    sm = server.signed("sagemaker", made["admin"])
    assert sm.list_endpoints()["Endpoints"] == []
    assert {m["ModelName"] for m in sm.list_models()["Models"]} == {MODEL}
