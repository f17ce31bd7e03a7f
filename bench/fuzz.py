"""Fuzz run (issue 14, point 5): tens of thousands of generated requests against a real server.

The generators are the suite's (``tests/hardening/fuzzing.py``: botocore's service models for
SageMaker, CloudWatch Logs and CloudWatch, plus InvokeEndpoint bodies and headers), here with
longer hostile strings and without shrinking. Every request is checked for the property (no 5xx,
no hang, strict JSON with ``__type`` from the AWS JSON APIs); the run prints counts by status, by
API and by operation, the error codes seen, and every broken request (at most 50 shown).

    python bench/fuzz.py [--requests 10000] [--seed 14] [--url http://127.0.0.1:8080]

Without ``--url`` it starts its own server on a fresh data dir with a deployed endpoint.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.hardening.fuzzing import ENDPOINT, Broken, Request, any_request, check  # noqa: E402
from tests.hardening.test_fuzz import FUZZ_ENV  # noqa: E402
from tests.support import ColdbrewServer, deploy_serverless, sklearn_archive, wait_for_status  # noqa: E402


def run(url: str, requests: int, run_seed: int, huge: int) -> dict[str, Any]:
    by_status: collections.Counter[int] = collections.Counter()
    by_api: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    by_operation: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    codes: collections.Counter[str] = collections.Counter()
    broken: list[str] = []
    client = httpx.Client(timeout=30)
    started = time.perf_counter()

    @seed(run_seed)
    @settings(
        max_examples=requests,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(sent=any_request(huge=huge))
    def fuzz(sent: Request) -> None:
        try:
            status, code = check(client, url, sent)
        except Broken as exc:
            broken.append(str(exc)[:600])
            status, code = 0, None  # counted apart: what the property forbids
        by_status[status] += 1
        by_api[sent.label.split(":")[0]][status] += 1
        by_operation[sent.label][status] += 1
        if code is not None:
            codes[f"{sent.label.split(':')[0]}:{code}"] += 1

    fuzz()
    elapsed = time.perf_counter() - started
    return {
        "requests": sum(by_status.values()),
        "seconds": round(elapsed, 1),
        "broken": len(broken),
        "by_status": {str(k) if k else "broken": v for k, v in sorted(by_status.items())},
        "by_api": {api: dict(sorted(c.items())) for api, c in sorted(by_api.items())},
        "by_operation": {op: dict(sorted(c.items())) for op, c in sorted(by_operation.items())},
        "error_codes": dict(codes.most_common(30)),
        "broken_requests": broken[:50],
    }


def _logged_errors(log: str) -> dict[str, int]:
    """The last line of each traceback in the server's log (the exception), counted."""
    errors: collections.Counter[str] = collections.Counter()
    lines = log.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Traceback"):
            end = index + 1
            while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
                end += 1
            if end < len(lines):
                errors[lines[end][:200]] += 1
    return dict(errors.most_common(20))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--huge", type=int, default=1_000_000, help="longest hostile string")
    parser.add_argument("--url", help="fuzz a running server instead of starting one")
    args = parser.parse_args()
    if args.url:
        print(json.dumps(run(args.url, args.requests, args.seed, args.huge), indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = ColdbrewServer(Path(tmp) / "data", env=FUZZ_ENV).start()
        try:
            archive, _ = sklearn_archive(Path(tmp) / "model.tar.gz")
            sm = server.client("sagemaker")
            deploy_serverless(sm, ENDPOINT, str(archive), max_concurrency=2)
            wait_for_status(sm, ENDPOINT, "InService")
            report = run(server.url, args.requests, args.seed, args.huge)
            report["server_errors"] = _logged_errors(server.log())
        finally:
            server.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
