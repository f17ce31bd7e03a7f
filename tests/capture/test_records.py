"""Capture records, keys and the writer's batching, sampling and bounds, without a server."""

from __future__ import annotations

import base64
import json
import re
import threading

from coldbrew.capture.config import CaptureConfig
from coldbrew.capture.records import CaptureEvent, FileKey, encoding, record_line
from coldbrew.capture.sinks import NewFile
from coldbrew.capture.writer import CaptureWriter

AT = 1_764_686_400.25  # 2025-12-02T14:40:00.250Z


def config(**overrides: object) -> CaptureConfig:
    request: dict[str, object] = {
        "EnableCapture": True,
        "InitialSamplingPercentage": 100,
        "DestinationS3Uri": "s3://bucket/some/prefix/",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {
            "CsvContentTypes": ["text/csv"],
            "JsonContentTypes": ["application/json"],
        },
    }
    request.update(overrides)
    return CaptureConfig.from_request(request)


def event(cfg: CaptureConfig, **overrides: object) -> CaptureEvent:
    fields: dict[str, object] = {
        "config": cfg, "endpoint": "ep", "variant": "AllTraffic", "at": AT,
        "input_type": "text/csv", "input_body": b"1,2,3", "output_type": "application/json",
        "output_body": b"[4.5]", "inference_id": None,
    }  # fmt: skip
    fields.update(overrides)
    return CaptureEvent(**fields)  # type: ignore[arg-type]


class MemorySink:
    def __init__(self, fail: bool = False) -> None:
        self.files: list[NewFile] = []
        self.fail = fail

    def write_many(self, files: list[NewFile]) -> list[str | None]:
        if self.fail:
            raise ConnectionError("no route to S3")
        self.files += files
        return [None] * len(files)


def test_encodings_follow_the_content_type_header() -> None:
    cfg = config()
    assert encoding("text/csv", cfg) == "CSV"
    assert encoding("text/csv; charset=utf-8", cfg) == "CSV"
    assert encoding("Application/JSON", cfg) == "JSON"
    assert encoding("application/x-npy", cfg) == "BASE64"
    # No CaptureContentTypeHeader: everything is base64, as on SageMaker.
    bare = config(CaptureContentTypeHeader=None)
    assert encoding("text/csv", bare) == "BASE64"


def test_a_record_as_sagemaker_writes_it() -> None:
    line = record_line(event(config(), inference_id="abc"))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record = json.loads(line)
    assert record["eventVersion"] == "0"
    assert record["captureData"] == {
        "endpointInput": {
            "observedContentType": "text/csv", "mode": "INPUT", "data": "1,2,3", "encoding": "CSV",
        },
        "endpointOutput": {
            "observedContentType": "application/json", "mode": "OUTPUT", "data": "[4.5]", "encoding": "JSON",
        },
    }  # fmt: skip
    metadata = record["eventMetadata"]
    assert metadata["inferenceTime"] == "2025-12-02T14:40:00Z"
    assert metadata["inferenceId"] == "abc"
    assert re.fullmatch(r"[0-9a-f-]{36}", metadata["eventId"])


def test_binary_and_undecodable_text_are_base64() -> None:
    body = bytes(range(256))
    record = json.loads(record_line(event(config(), input_type="text/csv", input_body=body)))
    assert record["captureData"]["endpointInput"]["encoding"] == "BASE64"
    assert base64.b64decode(record["captureData"]["endpointInput"]["data"]) == body


def test_only_the_modes_asked_for() -> None:
    record = json.loads(record_line(event(config(CaptureOptions=[{"CaptureMode": "Output"}]))))
    assert list(record["captureData"]) == ["endpointOutput"]
    assert "inferenceId" not in record["eventMetadata"]
    both = json.loads(record_line(event(config(CaptureOptions=[{"CaptureMode": "InputAndOutput"}]))))
    assert list(both["captureData"]) == ["endpointInput", "endpointOutput"]


def test_key_layout() -> None:
    key = FileKey.of(event(config())).object_key(AT)
    assert re.fullmatch(r"some/prefix/ep/AllTraffic/2025/12/02/14/40-00-250-[0-9a-f-]{36}\.jsonl", key), key
    root = FileKey.of(event(config(DestinationS3Uri="s3://bucket"))).object_key(AT)
    assert root.startswith("ep/AllTraffic/2025/12/02/14/")


def test_one_file_per_variant_and_hour_per_flush() -> None:
    sink = MemorySink()
    writer = CaptureWriter(sink)
    cfg = config()
    for i in range(5):
        writer.offer(cfg, "ep", "a", AT + i, "text/csv", b"1", "text/csv", b"2")
    writer.offer(cfg, "ep", "b", AT, "text/csv", b"1", "text/csv", b"2")
    writer.offer(cfg, "ep", "a", AT + 3600, "text/csv", b"1", "text/csv", b"2")
    assert writer.flush() == 7
    assert sorted(len(body.splitlines()) for _, _, body in sink.files) == [1, 1, 5]
    assert {bucket for bucket, _, _ in sink.files} == {"bucket"}
    assert writer.buffered_bytes == 0


def test_sampling() -> None:
    sink = MemorySink()
    writer = CaptureWriter(sink, seed=7)
    for percentage, expected in ((0, range(0, 1)), (100, range(1000, 1001)), (50, range(400, 601))):
        cfg = config(InitialSamplingPercentage=percentage)
        for _ in range(1000):
            writer.offer(cfg, "ep", "v", AT, "text/csv", b"1", "text/csv", b"2")
        assert writer.flush() in expected, percentage
    stopped = config(EnableCapture=False)
    writer.offer(stopped, "ep", "v", AT, "text/csv", b"1", "text/csv", b"2")
    assert writer.flush() == 0


def test_memory_is_bounded_and_drops_are_counted() -> None:
    sink = MemorySink(fail=True)
    writer = CaptureWriter(sink, max_buffered_bytes=10_000)
    cfg = config()
    for _ in range(100):
        writer.offer(cfg, "ep", "v", AT, "text/csv", b"x" * 1000, "text/csv", b"2")
    assert writer.buffered_bytes <= 10_000
    assert writer.dropped_full > 0
    kept = 100 - writer.dropped_full
    assert writer.flush() == 0  # S3 unreachable: dropped and counted, not kept
    assert writer.dropped_failed == kept and writer.buffered_bytes == 0


def test_the_thread_flushes_and_close_writes_the_rest() -> None:
    sink = MemorySink()
    writer = CaptureWriter(sink, flush_interval_s=0.05)
    writer.start()
    cfg = config()
    writer.offer(cfg, "ep", "v", AT, "text/csv", b"1", "text/csv", b"2")
    done = threading.Event()
    for _ in range(200):
        if writer.written == 1:
            done.set()
            break
        done.wait(0.05)
    assert writer.written == 1
    writer.offer(cfg, "ep", "v", AT, "text/csv", b"1", "text/csv", b"2")
    writer.close()
    assert writer.written == 2
