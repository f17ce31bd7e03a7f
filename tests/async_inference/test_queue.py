"""The queue and the dispatcher's housekeeping on real SQLite files and the real embedded S3 store.

The one stand-in is serving: an endpoint that is not live (as while it is being created or
redeployed after a restart), so requests wait in the queue until their TTL runs out; waiting six
hours for that is replaced by the dispatcher's clock, moved forward."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from coldbrew.async_inference.dispatcher import Dispatcher
from coldbrew.async_inference.objects import REQUEST_ID_META, EmbeddedObjects
from coldbrew.async_inference.queue import AsyncQueue, Outcome, Started
from coldbrew.async_inference.requests import new_request
from coldbrew.s3 import S3Store
from coldbrew.serving.targets import AsyncConfig, S3Url

CONFIG = AsyncConfig(output_path=S3Url("bucket", "out"), failure_path=S3Url("bucket", "failed"))


class NotLive:
    def endpoint(self, name: str) -> None:
        return None


def test_claims_are_fifo_per_endpoint_and_survive_a_reopen(tmp_path: Path) -> None:
    queue = AsyncQueue(tmp_path / "async.db")
    first = [new_request("a", CONFIG, f"s3://bucket/in/{i}") for i in range(5)]
    other = new_request("b", CONFIG, "s3://bucket/in/b")
    queue.enqueue(first[:3])
    queue.enqueue([other, *first[3:]])
    assert [r.id for r in queue.claim("a", 2)] == [r.id for r in first[:2]]
    queue.update([Started(first[0].id)], time.time())  # the first reached a worker; the second did not
    queue.close()
    reopened = AsyncQueue(tmp_path / "async.db")
    # What was claimed goes back to the queue, in its place.
    assert set(reopened.recover()) == {r.id for r in first[:2]}
    claimed = reopened.claim("a", 10)
    assert [r.id for r in claimed] == [r.id for r in first]
    # Only a start counts as an attempt: claimed ahead of need and never started does not.
    assert [r.attempts for r in claimed] == [1, 0, 0, 0, 0]
    reopened.finish([Outcome(r.id, True) for r in claimed], time.time())
    assert reopened.counts() == {"succeeded": 5, "queued": 1}
    assert set(reopened.backlog()) == {"b"}
    reopened.requeue([r.id for r in claimed])  # finished requests are never queued again
    assert reopened.counts() == {"succeeded": 5, "queued": 1}


def test_a_request_whose_ttl_runs_out_in_the_queue_gets_a_failure_object(tmp_path: Path) -> None:
    store = S3Store(tmp_path / "s3")
    store.create_bucket("bucket", "us-east-1")
    queue = AsyncQueue(tmp_path / "async.db")
    request = new_request("waiting", CONFIG, "s3://bucket/in/x", ttl_s=60)
    fresh = new_request("waiting", CONFIG, "s3://bucket/in/y", ttl_s=21600)
    queue.enqueue([request, fresh])
    later = time.time() + 120

    async def run() -> None:
        serving: Any = NotLive()
        dispatcher = Dispatcher(
            queue,
            EmbeddedObjects(store),
            serving,
            endpoint_exists=lambda key: True,
            region="us-east-1",
            clock=lambda: later,
        )
        await dispatcher._sweep_once()
        await asyncio.sleep(0.2)  # the failure is written by a task of its own
        await dispatcher.close()

    asyncio.run(run())
    row, content = store.open("bucket", f"failed/{request.id}-error.out".encode())
    with content:
        body = content.read()
    assert b"RequestTTLSeconds (60 s)" in body
    assert row.meta.user[REQUEST_ID_META] == request.id
    assert queue.counts() == {"failed": 1, "queued": 1}  # the other one still waits
    store.close()


def test_requests_of_a_deleted_endpoint_fail_with_a_reason(tmp_path: Path) -> None:
    store = S3Store(tmp_path / "s3")
    store.create_bucket("bucket", "us-east-1")
    queue = AsyncQueue(tmp_path / "async.db")
    requests = [new_request("gone", CONFIG, f"s3://bucket/in/{i}") for i in range(3)]
    queue.enqueue(requests)

    async def run() -> None:
        serving: Any = NotLive()
        dispatcher = Dispatcher(
            queue, EmbeddedObjects(store), serving, endpoint_exists=lambda key: False, region="us-east-1"
        )
        await dispatcher.start()
        for _ in range(50):
            if queue.counts().get("failed") == 3:
                break
            await asyncio.sleep(0.05)
        await dispatcher.close()

    asyncio.run(run())
    assert queue.counts() == {"failed": 3}
    for request in requests:
        _, content = store.open("bucket", f"failed/{request.id}-error.out".encode())
        with content:
            assert b"Endpoint gone was deleted" in content.read()
    store.close()
