"""Kill the server with SIGKILL at any moment: nothing acknowledged is lost."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

from tests.support import ColdbrewServer, deploy_serverless, wait_for_status


def test_sigkill_loses_nothing(tmp_path: Path, model_archive: tuple[Path, Any]) -> None:
    archive, _ = model_archive
    data_dir = tmp_path / "data"
    server = ColdbrewServer(data_dir).start()
    try:
        sm = server.client()
        deploy_serverless(sm, "steady", archive.as_uri())
        wait_for_status(sm, "steady", "InService")
        sm.add_tags(
            ResourceArn=sm.describe_model(ModelName="steady")["ModelArn"], Tags=[{"Key": "k", "Value": "v"}]
        )
        # Endpoints created right before the kill: caught mid-creation or just finished.
        for index in range(3):
            deploy_serverless(sm, f"late-{index}", archive.as_uri())
        described_before = {e["EndpointName"] for e in sm.list_endpoints(MaxResults=100)["Endpoints"]}
    finally:
        server.kill()

    with sqlite3.connect(data_dir / "coldbrew.db") as conn:
        statuses = dict(conn.execute("SELECT name, status FROM endpoints").fetchall())
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert set(statuses) == described_before == {"steady", "late-0", "late-1", "late-2"}

    server = ColdbrewServer(data_dir).start()
    try:
        sm = server.client()
        assert {m["ModelName"] for m in sm.list_models(MaxResults=100)["Models"]} == {
            "steady",
            "late-0",
            "late-1",
            "late-2",
        }
        assert len(sm.list_endpoint_configs(MaxResults=100)["EndpointConfigs"]) == 4
        for name in statuses:
            wait_for_status(sm, name, "InService")
        arn = sm.describe_model(ModelName="steady")["ModelArn"]
        assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "k", "Value": "v"}]
    finally:
        # uvicorn re-raises the signal after its graceful shutdown, so the exit status is -SIGTERM.
        assert server.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log()


def test_schema_is_versioned(tmp_path: Path) -> None:
    from coldbrew.control.store import MIGRATIONS, Store

    store = Store(tmp_path / "db.sqlite")
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    # Reopening an up-to-date database runs no migration again.
    store = Store(tmp_path / "db.sqlite")
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    try:
        Store(tmp_path / "db.sqlite")
    except RuntimeError as exc:
        assert "newer than this coldbrew" in str(exc)
    else:
        raise AssertionError("a database from a newer coldbrew must be refused")
