"""Group commit: what goes in one batch, and what a failed write does to its waiters."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from coldbrew.async_inference.commits import GroupCommit


class Recorder:
    """A blocking ``write`` that records its batches and can be held back or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on: int | None = None

    def write(self, items: list[int]) -> list[int]:
        self.gate.wait(5)
        self.batches.append(items)
        if self.fail_on in items:
            raise OSError("disk full")
        return [i * 10 for i in items]


def run(coro_fn):  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(1) as executor:
        return asyncio.run(coro_fn(executor))


def test_without_linger_items_that_arrive_during_a_write_share_the_next_batch() -> None:
    recorder = Recorder()

    async def go(executor: ThreadPoolExecutor) -> list[int]:
        commit = GroupCommit(recorder.write, executor)
        recorder.gate.clear()
        first = asyncio.ensure_future(commit.submit(1))
        await asyncio.sleep(0.05)  # the first batch is being written, held at the gate
        rest = [asyncio.ensure_future(commit.submit(i)) for i in (2, 3, 4)]
        await asyncio.sleep(0)
        recorder.gate.set()
        return await asyncio.gather(first, *rest)

    assert run(go) == [10, 20, 30, 40]
    assert recorder.batches == [[1], [2, 3, 4]]


def test_a_lingering_batch_waits_for_company_and_keeps_the_order() -> None:
    recorder = Recorder()

    async def go(executor: ThreadPoolExecutor) -> list[int]:
        commit = GroupCommit(recorder.write, executor, linger_s=0.2)
        futures = [asyncio.ensure_future(commit.submit(1))]
        for i in (2, 3):
            await asyncio.sleep(0.02)  # well inside the linger
            futures.append(asyncio.ensure_future(commit.submit(i)))
        return await asyncio.gather(*futures)

    assert run(go) == [10, 20, 30]
    assert recorder.batches == [[1, 2, 3]]


def test_a_full_batch_does_not_linger_and_the_rest_follows() -> None:
    recorder = Recorder()

    async def go(executor: ThreadPoolExecutor) -> list[int]:
        # A linger far longer than the test's patience: only max_batch can send these batches.
        commit = GroupCommit(recorder.write, executor, linger_s=60, max_batch=2)
        futures = [commit.submit_nowait(i) for i in (1, 2, 3, 4)]
        return await asyncio.wait_for(asyncio.gather(*futures), 5)

    assert run(go) == [10, 20, 30, 40]
    assert recorder.batches == [[1, 2], [3, 4]]


def test_a_failed_write_fails_each_waiter_of_its_batch_only() -> None:
    recorder = Recorder()
    recorder.fail_on = 2

    async def go(executor: ThreadPoolExecutor) -> tuple[list[object], int]:
        commit = GroupCommit(recorder.write, executor, linger_s=0.05, max_batch=2)
        futures = [commit.submit_nowait(i) for i in (1, 2, 3)]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        later = await commit.submit(5)  # the commit goes on after a failed batch
        return outcomes, later

    outcomes, later = run(go)
    assert [type(o) for o in outcomes[:2]] == [OSError, OSError]
    assert outcomes[2] == 30
    assert later == 50


def test_drain_waits_for_a_lingering_batch() -> None:
    recorder = Recorder()

    async def go(executor: ThreadPoolExecutor) -> None:
        commit = GroupCommit(recorder.write, executor, linger_s=0.1)
        commit.submit_nowait(7)
        assert recorder.batches == []
        await commit.drain()

    run(go)
    assert recorder.batches == [[7]]


def test_a_cancelled_waiter_is_still_written() -> None:
    recorder = Recorder()

    async def go(executor: ThreadPoolExecutor) -> None:
        commit = GroupCommit(recorder.write, executor, linger_s=0.05)
        waiter = asyncio.ensure_future(commit.submit(8))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await commit.drain()

    run(go)
    assert recorder.batches == [[8]]
