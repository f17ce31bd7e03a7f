"""Every script in examples/ runs to completion against a real server, as a user would run it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.support import REPO, ColdbrewServer

EXAMPLES = ("sklearn_random_forest.py", "xgboost_serverless.py", "embeddings.py")


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_runs(server: ColdbrewServer, script: str) -> None:
    started = time.monotonic()
    # check=False: a failure is asserted below, with the script's output and the server's log.
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / script), "--url", server.url],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"{script} exited {result.returncode}:\n{output}\n--- server log ---\n{server.log()[-3000:]}"
    )
    assert "is InService" in result.stdout and "deleted endpoint" in result.stdout, output
    print(f"{script}: {time.monotonic() - started:.1f} s")
    # The example cleaned up after itself.
    sm = server.client("sagemaker")
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_models()["Models"] == []
