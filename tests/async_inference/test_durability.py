"""Accepted async requests survive a SIGKILL of the server: each ends with exactly one outcome."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.async_inference.test_live import BUCKET, SCRIPTED, deploy, split
from tests.support import ColdbrewServer


def listed(s3: Any, prefix: str) -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys |= {o["Key"] for o in page.get("Contents", [])}
    return keys


def test_sigkill_with_a_queue_loses_nothing_and_duplicates_no_outcome(tmp_path: Path) -> None:
    model = tmp_path / "scripted"
    (model / "code").mkdir(parents=True)
    (model / "code" / "inference.py").write_text(SCRIPTED)
    order = tmp_path / "processed.log"
    server = ColdbrewServer(tmp_path / "data").start()
    try:
        server.client("s3").create_bucket(Bucket=BUCKET)
        name = "async-durable"
        output = {
            "S3OutputPath": f"s3://{BUCKET}/durable/out",
            "S3FailurePath": f"s3://{BUCKET}/durable/failed",
        }
        deploy(
            server, name, str(model), output=output, max_concurrency=2, environment={"ORDER_FILE": str(order)}
        )
        s3, runtime = server.client("s3"), server.client("sagemaker-runtime")
        sources = []
        for i in range(150):
            key = f"durable/in/{i:03d}"
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"sleep:0.05")
            sources.append(f"s3://{BUCKET}/{key}")
        with ThreadPoolExecutor(8) as pool:
            responses = list(
                pool.map(lambda s: runtime.invoke_endpoint_async(EndpointName=name, InputLocation=s), sources)
            )
        deadline = time.monotonic() + 30
        while len(listed(s3, "durable/out/")) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill()
        assert len(listed(server.start().client("s3"), "durable/out/")) < 150  # killed with a queue
        s3 = server.client("s3")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            finished = listed(s3, "durable/out/") | listed(s3, "durable/failed/")
            if len(finished) >= 150:
                break
            time.sleep(0.1)
        outputs, failures = listed(s3, "durable/out/"), listed(s3, "durable/failed/")
        for response in responses:
            has_output = split(response["OutputLocation"])[1] in outputs
            has_failure = split(response["FailureLocation"])[1] in failures
            assert has_output != has_failure, response["InferenceId"]
        assert len(outputs) == 150 and not failures
        # Processing may repeat across the kill: what ran but was not recorded yet (in flight, or its
        # result in the batch being written).
        processed = order.read_text().split()
        assert 150 <= len(processed) <= 150 + 16
    finally:
        server.stop()
