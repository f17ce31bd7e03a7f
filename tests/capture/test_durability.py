"""A SIGKILL loses at most the last second of capture records: every invocation answered more
than ~2 s before the kill is in S3 after a restart; a SIGTERM loses none."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.capture.conftest import BUCKET, ROW, capture_config, captured, deploy
from tests.support import ColdbrewServer


def served(runtime: Any, inference_id: str, timeout: float = 120.0) -> None:
    """Invoke until answered: after a restart the endpoint is brought back in the background, and
    says so (ModelNotReadyException) until it is."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            runtime.invoke_endpoint(
                EndpointName="killed", Body=ROW, ContentType="text/csv", InferenceId=inference_id
            )
            return
        except ClientError as e:
            if e.response["Error"]["Code"] != "ModelNotReadyException" or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_sigkill_loses_at_most_the_last_second(
    tmp_path: Path, model_archive: tuple[Path, Any], request: pytest.FixtureRequest
) -> None:
    data_dir = tmp_path / "data"
    server = ColdbrewServer(data_dir).start()
    request.addfinalizer(server.stop)
    sm, runtime, s3 = server.client("sagemaker"), server.client("sagemaker-runtime"), server.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    deploy(sm, "killed", model_archive[0], capture_config("killed"))
    early = [f"early-{i}" for i in range(30)]
    for inference_id in early:
        runtime.invoke_endpoint(
            EndpointName="killed", Body=ROW, ContentType="text/csv", InferenceId=inference_id
        )
    time.sleep(3.0)  # well past the writer's 1 s flush interval (and the flush itself)
    for i in range(10):  # these may or may not be written before the kill
        runtime.invoke_endpoint(
            EndpointName="killed", Body=ROW, ContentType="text/csv", InferenceId=f"late-{i}"
        )
    server.kill()

    again = ColdbrewServer(data_dir).start()
    request.addfinalizer(again.stop)
    ids = [r["eventMetadata"]["inferenceId"] for _, r in captured(again.client("s3"), "killed/")]
    assert set(early) <= set(ids)
    assert len(ids) == len(set(ids))  # nothing written twice

    # A graceful stop (SIGTERM) writes everything, up to the last invocation answered.
    runtime = again.client("sagemaker-runtime")
    last = [f"last-{i}" for i in range(5)]
    for inference_id in last:
        served(runtime, inference_id)
    again.stop()
    third = ColdbrewServer(data_dir).start()
    request.addfinalizer(third.stop)
    ids = [r["eventMetadata"]["inferenceId"] for _, r in captured(third.client("s3"), "killed/")]
    assert set(early + last) <= set(ids)
