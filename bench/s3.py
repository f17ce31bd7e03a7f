"""Embedded S3 benchmark (issue 11, point 7): PUT and GET throughput through boto3 for 1 MB and
100 MB objects, against the local disk's own copy speed measured in the same run.

A real ``coldbrew serve`` on a loopback port, its data dir on the same filesystem as the files the
baseline copies. The baseline is ``shutil.copyfile`` of a file of the same size followed by an
fsync, because the store fsyncs every object before acknowledging it (the copy without fsync is
reported too). boto3 runs as users run it: ``put_object``/``get_object`` with bytes in memory, and
``upload_file``/``download_file`` (multipart and ranged GETs, 8 MB parts, 10 threads) for the
100 MB object. Throughput is MB/s (10^6 bytes), the median over the trials; ``md5_mb_s`` is
hashlib's MD5 over the same bytes, the ceiling for any PUT (S3's ETag is the body's MD5), and
``load_average`` says how busy the machine was (other processes skew every figure alike);
``put_object_to_a_sink`` is boto3 PUTting to a uvicorn app that drops the body, the ceiling of
boto3 plus the HTTP server on this machine, whatever the store does.

    python bench/s3.py [--trials-small 30] [--trials-large 5]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402

from tests.support import ColdbrewServer, free_port  # noqa: E402

MB = 1024 * 1024


def median_rate(size: int, trials: int, run: Callable[[int], None]) -> float:
    """Median MB/s of ``run(trial)`` moving ``size`` bytes."""
    seconds = []
    for trial in range(trials):
        started = time.perf_counter()
        run(trial)
        seconds.append(time.perf_counter() - started)
    return size / 1e6 / statistics.median(seconds)


def disk_copy(source: Path, work: Path, fsync: bool) -> Callable[[int], None]:
    def run(trial: int) -> None:
        target = work / f"copy-{trial}"
        shutil.copyfile(source, target)
        if fsync:
            fd = os.open(target, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

    return run


# An ASGI app that reads a request's body and drops it: boto3 PUTs to it measure the client and the
# HTTP server alone, the most any S3 behind the same uvicorn could give on this machine.
SINK = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


@contextlib.contextmanager
def sink() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SINK, str(port)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


def measure(s3: Any, bucket: str, source: Path, work: Path, trials: int, sink_s3: Any) -> dict[str, Any]:
    size = source.stat().st_size
    data = source.read_bytes()
    transfer = TransferConfig(multipart_threshold=8 * MB, multipart_chunksize=8 * MB, max_concurrency=10)
    key = f"object-{size}"
    result: dict[str, Any] = {
        "bytes": size,
        "disk_copy_fsync_mb_s": median_rate(size, trials, disk_copy(source, work, fsync=True)),
        "disk_copy_mb_s": median_rate(size, trials, disk_copy(source, work, fsync=False)),
    }

    def put(trial: int) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=data)

    def get(trial: int) -> None:
        s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    result["put_object_mb_s"] = median_rate(size, trials, put)
    result["put_object_to_a_sink_mb_s"] = median_rate(
        size, trials, lambda t: sink_s3.put_object(Bucket=bucket, Key=key, Body=data)
    )
    result["get_object_mb_s"] = median_rate(size, trials, get)
    for copy in work.glob("copy-*"):
        copy.unlink()
    if size >= transfer.multipart_threshold:
        result["upload_file_mb_s"] = median_rate(
            size, trials, lambda t: s3.upload_file(str(source), bucket, key, Config=transfer)
        )
        result["download_file_mb_s"] = median_rate(
            size, trials, lambda t: s3.download_file(bucket, key, str(work / "download"), Config=transfer)
        )
    # Every PUT computes the object's MD5 (its ETag): that alone bounds PUT throughput on this machine.
    result["md5_mb_s"] = median_rate(
        size, trials, lambda t: hashlib.md5(data, usedforsecurity=False).hexdigest()
    )
    baseline = result["disk_copy_fsync_mb_s"]
    result["ratio_to_disk_copy"] = {
        name.removesuffix("_mb_s"): round(value / baseline, 3)
        for name, value in result.items()
        if name.endswith("_mb_s") and not name.startswith(("disk_copy", "md5"))
    }
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials-small", type=int, default=30)
    parser.add_argument("--trials-large", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-bench-s3-"))
    server = ColdbrewServer(tmp / "data").start()
    try:
        with sink() as sink_url:
            s3 = server.client("s3", max_pool_connections=20)
            sink_s3 = boto3.client(
                "s3", endpoint_url=sink_url, region_name="us-east-1", aws_access_key_id="any",
                aws_secret_access_key="any",
            )  # fmt: skip
            s3.create_bucket(Bucket="bench")
            results = {}
            for size, trials in ((1 * MB, args.trials_small), (100 * MB, args.trials_large)):
                source = tmp / f"source-{size}"
                source.write_bytes(os.urandom(size))
                results[f"{size // MB}MB"] = measure(s3, "bench", source, tmp, trials, sink_s3)
                source.unlink()
        summary = {"benchmark": "s3", "unit": "MB/s (median)", "load_average": os.getloadavg()[0], **results}
        print(json.dumps(summary, indent=2))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
