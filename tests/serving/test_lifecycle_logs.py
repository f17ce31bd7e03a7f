"""Environment releases and scale-to-zero are logged, one line each, on the "coldbrew.serving" logger.

The live pools with the fake backend and virtual clock of ``test_pools`` check what the lines say
after idle expiry, eviction, a worker's death and a drain; a real server checks the lines it writes.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.serving.test_pools import Harness, config, run, settle
from tests.support import ColdbrewServer, deploy_serverless, wait_for_status


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "coldbrew.serving" and r.levelno == logging.INFO and text in r.getMessage()
    ]


@pytest.fixture(autouse=True)
def _info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="coldbrew.serving")


def test_idle_expiry_logs_each_release_then_scale_to_zero_once(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config(max_concurrency=2, idle_timeout_s=300.0))
        first, second = await h.cold(pool), await h.cold(pool)
        h.clock.t = 10.0
        h.pools.release(first)
        h.pools.release(second)
        await settle()
        h.clock.t = 309.0
        h.pools.tick()
        assert lines(caplog, "released") == []
        # Both idle since 10 s: both released by the same tick, the pool at zero after them.
        h.clock.t = 310.0
        h.pools.tick()
        h.pools.tick()  # nothing left to release: nothing more is logged
        await settle()
        await h.pools.close()

    run(main())
    released = lines(caplog, "released")
    assert len(released) == 2
    assert all(r.startswith("ep/a: environment ") for r in released)
    assert all(r.endswith(": idle past its keep-alive") for r in released)
    assert all("(worker " in r for r in released)
    assert {r.split(" released after ")[1].split(" s:")[0] for r in released} == {"310.0", "309.0"}
    assert lines(caplog, "scaled to zero") == ["ep/a: scaled to zero after 300 s idle"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages.index(released[1]) < messages.index("ep/a: scaled to zero after 300 s idle")


def test_scale_to_zero_is_logged_again_after_the_next_cold_start(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config(idle_timeout_s=60.0))
        for k in range(2):
            h.clock.t = 1000.0 * k
            lease = await h.cold(pool)
            h.pools.release(lease)
            h.clock.t += 60.0
            h.pools.tick()
            await settle()
        await h.pools.close()

    run(main())
    assert lines(caplog, "scaled to zero") == ["ep/a: scaled to zero after 60 s idle"] * 2
    assert len(lines(caplog, "started in")) == 2


def test_eviction_names_the_memory_budget(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        h = Harness(memory_budget_mb=1024)
        a = await h.add(config("a"))
        b = await h.add(config("b"))
        lease = await h.cold(a)
        h.clock.t = 5.0
        h.pools.release(lease)
        h.clock.t = 25.0
        h.pools.release(await h.cold(b))
        await settle()
        await h.pools.close()

    run(main())
    (released,) = lines(caplog, "released")
    assert released.startswith("ep/a: environment 1 (worker ")
    assert released.endswith("evicted to make room in the memory budget for another variant's cold start")
    assert lines(caplog, "scaled to zero") == ["ep/a: scaled to zero after 20 s idle"]


def test_a_worker_that_dies_while_idle(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config())
        lease = await h.cold(pool)
        h.pools.release(lease)
        lease.env.worker.alive = False
        h.clock.t = 31.0
        h.pools.reap_dead()
        await settle()
        await h.pools.close()

    run(main())
    (released,) = lines(caplog, "released")
    assert released.endswith(" released after 31.0 s: its worker exited")
    assert lines(caplog, "scaled to zero") == ["ep/a: scaled to zero after 30 s idle"]


def test_a_dead_worker_found_by_an_invocation_is_no_scale_to_zero(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config())
        lease = await h.cold(pool)
        h.pools.release(lease)
        lease.env.worker.alive = False
        task = h.acquire(pool)  # routed to the dead worker, then admitted again: a cold start
        await settle()
        h.backend.finish(1)
        h.pools.release(await task)
        await h.pools.close()

    run(main())
    assert len(lines(caplog, "its worker exited")) == 1
    assert lines(caplog, "scaled to zero") == []


def test_drain_logs_releases_but_no_scale_to_zero(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        h = Harness()
        pool = await h.add(config(max_concurrency=3))
        first = await h.cold(pool)
        waiting = h.acquire(pool)  # starts a second environment...
        await settle()
        h.pools.release(first)  # ...but is served by the first, which frees up before it is ready
        lease = await waiting
        # Out of time at once: the busy environment and the one still starting are both stopped.
        await h.pools.drain(pool, timeout_s=0.0)
        h.backend.finish(1)
        await settle()
        h.pools.release(lease)
        await h.pools.close()

    run(main())
    released = lines(caplog, "released")
    assert len(released) == 2
    assert all(
        r.endswith(": its variant was drained (replaced, deleted or the server stopping)") for r in released
    )
    assert ["(still starting)" in r for r in released] == [False, True]
    assert lines(caplog, "scaled to zero") == []


def test_a_real_server_logs_one_release_and_one_scale_to_zero(
    server: ColdbrewServer, model_archive: tuple[Path, Any]
) -> None:
    sm = server.client()
    deploy_serverless(sm, "logged", model_archive[0].as_uri(), environment={"COLDBREW_IDLE_TIMEOUT_S": "2"})
    wait_for_status(sm, "logged", "InService")
    server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="logged", ContentType="text/csv", Body=",".join(["0.01"] * 10)
    )
    deadline = time.monotonic() + 30
    while "logged/AllTraffic: scaled to zero" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # long enough for a second line, if there were one
    log = [line for line in server.log().splitlines() if "coldbrew.serving: logged/AllTraffic:" in line]
    assert len([line for line in log if " started in " in line]) == 1, log  # the load check's, kept warm
    [released] = [line for line in log if " released " in line]
    assert released.endswith(": idle past its keep-alive")
    [zero] = [line for line in log if "scaled to zero" in line]
    assert re.search(
        r"INFO coldbrew\.serving: logged/AllTraffic: scaled to zero after [23]\.\d s idle$", zero
    )
    assert log.index(released) < log.index(zero)
    sm.delete_endpoint(EndpointName="logged")
