"""Data capture benchmark (issue 17): warm invoke p50 with capture at 100% against without, in
the same run on the same server.

Two serverless endpoints of the same model, one capturing every invocation (input and output, to
the embedded S3), one not; warm requests alternate between them so that drift of a loaded machine
hits both alike. Prints one JSON document; the issue asks that p50 rise by less than 0.1 ms.

    python bench/capture.py [--requests 4000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.capture.conftest import ROW, capture_config, captured, deploy  # noqa: E402
from tests.support import ColdbrewServer, sklearn_archive  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000, help="per endpoint")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="coldbrew-bench-capture-"))
    archive, _ = sklearn_archive(tmp / "model.tar.gz", n_estimators=10)
    server = ColdbrewServer(tmp / "data").start()
    try:
        sm, s3 = server.client(), server.client("s3")
        s3.create_bucket(Bucket="capture")
        deploy(sm, "plain", archive, None)
        deploy(sm, "captured", archive, capture_config("bench"))
        headers = {"Content-Type": "text/csv"}
        urls = {name: f"{server.url}/endpoints/{name}/invocations" for name in ("plain", "captured")}
        samples: dict[str, list[float]] = {name: [] for name in urls}
        with httpx.Client() as client:
            for _ in range(200):
                for url in urls.values():
                    client.post(url, content=ROW, headers=headers).raise_for_status()
            for _ in range(args.requests):
                for name, url in urls.items():
                    started = time.perf_counter()
                    client.post(url, content=ROW, headers=headers).raise_for_status()
                    samples[name].append(time.perf_counter() - started)
        # Every captured invocation is in S3 (200 warm-up ones too) once the writer has flushed.
        expected = args.requests + 200
        deadline = time.monotonic() + 60
        while (records := len(captured(s3, "bench/"))) < expected and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        server.stop()
    results: dict[str, Any] = {
        "model": "RandomForestRegressor(n_estimators=10) on load_diabetes, one-row CSV, serverless 1024 MB",
        "requests_per_endpoint": args.requests,
    }
    for name, values in samples.items():
        ms = sorted(v * 1000 for v in values)
        p50, p90 = statistics.median(ms), ms[int(0.9 * len(ms))]
        results[name] = {"p50_ms": round(p50, 4), "p90_ms": round(p90, 4)}
    results["p50_rise_ms"] = round(results["captured"]["p50_ms"] - results["plain"]["p50_ms"], 4)
    results["records_written"] = records
    results["records_expected"] = expected
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
