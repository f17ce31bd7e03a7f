"""The ``coldbrew`` command as a user runs it: one readable line for what they got wrong."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ColdbrewServer, deploy_serverless, free_port, wait_for_status


def coldbrew(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coldbrew", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_busy_port_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = coldbrew("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"coldbrew: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "stop what uses it or pick another port with --port (COLDBREW_PORT)"
    ]
    assert not (tmp_path / "data").exists()  # nothing was started or created


def test_bad_setting_is_one_readable_line(tmp_path: Path) -> None:
    result = coldbrew("serve", "--data-dir", str(tmp_path / "data"), env={"COLDBREW_IDLE_TIMEOUT_S": "-1"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "coldbrew: invalid setting COLDBREW_IDLE_TIMEOUT_S='-1': Input should be greater than 0"
    )


def test_ctrl_c_exits_quietly(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coldbrew",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    # The conventional status after SIGINT, once the server has shut down in order.
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert "Application shutdown complete" in stderr


def test_endpoints_describe_invoke_delete_against_a_running_server(
    server: ColdbrewServer, tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    sm = server.client()
    deploy_serverless(sm, "cli-ep", model_archive[0].as_uri(), memory=2048, max_concurrency=3)
    wait_for_status(sm, "cli-ep", "InService")
    url = ("--url", server.url)

    store = ("--data-dir", str(server.data_dir))

    listed = coldbrew("endpoints", *url, *store, "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = [r for r in json.loads(listed.stdout) if r["name"] == "cli-ep"]
    assert (row["status"], row["variants"]) == ("InService", "AllTraffic: 2048 MB x3")
    assert row["busy"] + row["idle"] + row["starting"] <= 1  # the load check's worker, if still warm
    assert (row["invocations_today"], row["cost_today"]) == (0, 0.0)

    described = coldbrew("describe", "cli-ep", *url, "--json")
    assert described.returncode == 0
    assert json.loads(described.stdout)["EndpointConfigName"] == "cli-ep-config"

    row_csv = ",".join(["0.01"] * 10)
    payload = tmp_path / "row.csv"
    payload.write_text(row_csv)
    for body in (row_csv, f"@{payload}"):
        invoked = coldbrew("invoke", "cli-ep", *url, "--body", body)
        assert invoked.returncode == 0, invoked.stderr
        assert len(json.loads(invoked.stdout)) == 1  # one prediction
    piped = subprocess.run(
        [sys.executable, "-m", "coldbrew", "invoke", "cli-ep", *url, "--body", "-"],
        input=row_csv.encode(),
        capture_output=True,
        timeout=60,
    )
    assert piped.returncode == 0 and len(json.loads(piped.stdout)) == 1

    bad = coldbrew("invoke", "cli-ep", *url, "--body", "not,numbers")
    assert bad.returncode == 1
    assert bad.stderr.startswith("coldbrew: ModelError: ") and len(bad.stderr.strip().splitlines()) == 1

    # Four invocations (the failed one too), priced as SageMaker Serverless bills them.
    listed = coldbrew("endpoints", *url, *store, "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = [r for r in json.loads(listed.stdout) if r["name"] == "cli-ep"]
    assert row["invocations_today"] == 4
    assert 0 < row["cost_today"] < 0.001
    table = coldbrew("endpoints", *url, *store, env={"COLUMNS": "80"})
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    # One line per endpoint, not wrapped: it fits without squeezing.
    [line] = [line for line in lines if "cli-ep" in line]
    cells = [cell.strip() for cell in line.split("│")[1:-1]]
    assert cells[:2] == ["cli-ep", "InService"] and cells[3:] == ["4", "<0.0001"]
    assert "invocations today" in table.stdout and "USD today" in table.stdout
    assert lines[-2].startswith("today: since 00:00 UTC; cost in USD at us-east-2 prices of ")
    # The shipped prices are us-east-2's; the endpoints are in us-east-1, and the table says so.
    assert lines[-1] == "note: us-east-2 prices, not us-east-1's: COLDBREW_PRICES=FILE for your own"
    wide = coldbrew("endpoints", *url, *store, "--wide")
    assert wide.returncode == 0
    assert "AllTraffic: 2048 MB x3" in wide.stdout and "created" in wide.stdout

    deleted = coldbrew("delete", "cli-ep", *url, "--wait")
    assert (deleted.returncode, deleted.stdout.strip()) == (0, "deleted cli-ep")
    for command in (("describe", "cli-ep"), ("delete", "cli-ep"), ("invoke", "cli-ep", "--body", "1")):
        missing = coldbrew(*command, *url)
        assert missing.returncode == 1
        assert missing.stderr.startswith("coldbrew: endpoint cli-ep not found")
        assert "Traceback" not in missing.stderr


def test_endpoints_without_the_servers_store_says_why(
    server: ColdbrewServer, tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    sm = server.client()
    deploy_serverless(sm, "cli-usage", model_archive[0].as_uri())
    wait_for_status(sm, "cli-usage", "InService")
    url = ("--url", server.url)

    missing = coldbrew("endpoints", *url, "--data-dir", str(tmp_path / "nowhere"), env={"COLUMNS": "80"})
    assert missing.returncode == 0
    [line] = [line for line in missing.stdout.splitlines() if "cli-usage" in line]
    assert [cell.strip() for cell in line.split("│")[1:-1]][3:] == ["-", "-"]
    assert missing.stderr.strip() == (
        "coldbrew: no invocations and cost today: no coldbrew database at "
        f"{tmp_path / 'nowhere' / 'coldbrew.db'}; pass the server's --data-dir"
    )

    # Another server's store, with an endpoint of the same name created at another time.
    other = tmp_path / "other"
    other.mkdir()
    source = sqlite3.connect(f"file:{server.data_dir / 'coldbrew.db'}?mode=ro", uri=True)
    copy = sqlite3.connect(other / "coldbrew.db")
    source.backup(copy)
    source.close()
    copy.execute("UPDATE endpoints SET created_at = created_at - 3600")
    copy.commit()
    copy.close()
    foreign = coldbrew("endpoints", *url, "--data-dir", str(other), "--json")
    assert foreign.returncode == 0
    [row] = [r for r in json.loads(foreign.stdout) if r["name"] == "cli-usage"]
    assert (row["invocations_today"], row["cost_today"]) == (None, None)
    assert foreign.stderr.strip() == (
        f"coldbrew: no invocations and cost today: {other / 'coldbrew.db'} is not the store of the "
        f"server at {server.url}; pass its --data-dir"
    )
    assert coldbrew("delete", "cli-usage", *url, "--wait").returncode == 0


def test_every_argument_has_help() -> None:
    from coldbrew.cli import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subcommands.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"coldbrew {name} {action.dest} has no help"


def test_deploy_one_model_file_to_an_in_service_endpoint(
    server: ColdbrewServer, tmp_path: Path, model_archive: tuple[Path, Any]
) -> None:
    import joblib

    model_file = tmp_path / "diabetes_forest.joblib"
    joblib.dump(model_archive[1], model_file)
    url = ("--url", server.url)
    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}  # where deploy keeps the archive it packs
    deployed = coldbrew(
        "deploy", str(model_file), "--memory", "1024", "--max-concurrency", "2", *url, env=cache
    )
    assert deployed.returncode == 0, deployed.stderr
    assert deployed.stdout.startswith("diabetes-forest is InService (1024 MB, MaxConcurrency 2) in ")
    invoked = coldbrew("invoke", "diabetes-forest", *url, "--body", ",".join(["0.01"] * 10))
    assert invoked.returncode == 0, invoked.stderr
    expected = model_archive[1].predict([[0.01] * 10]).tolist()
    assert json.loads(invoked.stdout) == pytest.approx(expected)

    assert len(list((tmp_path / "cache" / "coldbrew" / "deploy").glob("*.tar.gz"))) == 1
    again = coldbrew("deploy", str(model_file), *url, env=cache)
    assert again.returncode == 1
    assert again.stderr.startswith("coldbrew: cannot deploy diabetes-forest: ValidationException: ")

    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model")
    failed = coldbrew("deploy", str(junk), *url, env=cache)
    assert failed.returncode == 1
    assert failed.stderr.startswith("coldbrew: junk failed: ")
    assert coldbrew("deploy", str(tmp_path / "missing.joblib"), *url).stderr.strip() == (
        f"coldbrew: {tmp_path / 'missing.joblib'}: no such file or directory"
    )
