"""The seed's MLOps template deployed unchanged as prod (instances, DataCaptureConfig) through
``coldbrew deploy-stack``: its endpoint captures every invocation to the template's upload path."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from tests.capture.conftest import wait_for_records
from tests.stacks.test_live import ROW, deploy_stack, invoke, parameters
from tests.support import ColdbrewServer


def test_prod_stage_captures(
    server: ColdbrewServer, sm: Any, s3: Any, model_archive: tuple[Path, Any]
) -> None:
    done = deploy_stack(server, "seed-prod", parameters("seed", "prod", model_archive[0].as_uri()))
    assert done.returncode == 0, done.stdout + done.stderr
    described = sm.describe_endpoint(EndpointName="seed-prod")
    assert described["DataCaptureConfig"] == {
        "EnableCapture": True,
        "CaptureStatus": "Started",
        "CurrentSamplingPercentage": 100,
        "DestinationS3Uri": "s3://capture/seed",
    }
    outputs = [invoke(server, "seed-prod") for _ in range(3)]
    records = wait_for_records(s3, "seed/seed-prod/AllTraffic/", 3)
    assert len(records) == 3
    for _, record in records:
        data = record["captureData"]
        # The template lists no CaptureContentTypeHeader: base64, as SageMaker writes it.
        assert base64.b64decode(data["endpointInput"]["data"]).decode() == ROW
        assert base64.b64decode(data["endpointOutput"]["data"]) in outputs
