"""Real zygotes (issue 18): a preload module that starts threads is left out, loudly, and the
zygote still forks; the zygote of a runtime no pool uses is stopped after its idle period, never
while a worker of its own runs, and started again by the next cold start of its runtime.

The idle period is measured on an injected clock, so nothing here waits for it to pass.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from coldbrew.backends.base import WorkerSpec
from coldbrew.backends.containment import ContainmentConfig
from coldbrew.backends.local import LocalBackend
from coldbrew.backends.zygotes import ZygoteChild, Zygotes

# Starts a thread as it is imported, as pyarrow's jemalloc does, but with no setting to stop it.
THREAD_STARTER = textwrap.dedent("""
    import threading, time
    threading.Thread(target=time.sleep, args=(3600,), name="starter", daemon=True).start()
""")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    x = np.arange(20, dtype=float).reshape(10, 2)
    joblib.dump(LinearRegression().fit(x, x.sum(axis=1)), directory / "model.joblib")
    return directory


def backend_with(
    preload: dict[str, tuple[str, ...]],
    clock: Clock,
    idle_s: float = 60.0,
    eager: tuple[str, ...] = (),
    pythonpath: Path | None = None,
) -> LocalBackend:
    backend = LocalBackend(
        preload=preload, memory_cgroups=False, eager_runtimes=eager, containment=ContainmentConfig()
    )
    env = dict(backend.containment.base_env)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    # The same supervisor the backend builds, with the test's clock (and module path for the zygote).
    backend.zygote_supervisor = Zygotes(
        backend.run_dir, preload, 120.0, eager_runtimes=eager, base_env=env, idle_s=idle_s, clock=clock
    )
    return backend


async def forked(backend: LocalBackend, model_dir: Path, runtime: str) -> ZygoteChild:
    worker = await backend.start(WorkerSpec(model_dir=str(model_dir), memory_mb=512, runtime=runtime))
    assert isinstance(worker, ZygoteChild), "started as a fresh interpreter, not forked"
    return worker


def test_a_module_that_starts_threads_is_left_out_and_the_zygote_still_forks(
    tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "thread_starter.py").write_text(THREAD_STARTER)

    async def run() -> None:
        backend = backend_with(
            {"generic": ("numpy", "thread_starter", "joblib")}, Clock(), pythonpath=modules
        )
        try:
            worker = await forked(backend, model_dir, "generic")
            zygote = backend.zygote_supervisor.running["generic"]
            assert worker.zygote is zygote
            (state,) = backend.zygote_supervisor.states()
            assert state.state == "ready"
            assert "thread_starter" not in state.modules and "joblib" in state.modules
            (left_out,) = state.left_out
            assert left_out.module == "thread_starter"
            assert left_out.started_by == "thread_starter"
            assert len(left_out.threads) == 1 and left_out.import_ms >= 0
            await worker.stop()
        finally:
            await backend.close()

    with caplog.at_level(logging.WARNING, logger="coldbrew.backends"):
        asyncio.run(run())
    warning = next(r.getMessage() for r in caplog.records if "leaves thread_starter out" in r.getMessage())
    assert "every cold start of this runtime imports it itself" in warning


def test_idle_zygote_is_stopped_and_started_again_on_demand(model_dir: Path) -> None:
    clock = Clock()

    async def run() -> None:
        backend = backend_with(
            {"generic": ("numpy", "joblib"), "sklearn": ("numpy",)}, clock, eager=("sklearn",)
        )
        zygotes = backend.zygote_supervisor
        try:
            backend.use_runtimes({"generic"})
            worker = await forked(backend, model_dir, "generic")
            first = zygotes.running["generic"]
            assert await zygotes.wait_ready("sklearn", 120.0) is not None

            # No pool uses either runtime any more, for longer than the idle period; but a worker
            # forked by the generic zygote still runs (it would exit with it): kept.
            backend.use_runtimes(set())
            clock.now += 61
            backend.maintain()
            assert zygotes.running["generic"] is first and first.is_alive()

            await worker.stop()
            while first.has_children():
                await asyncio.sleep(0.05)
            clock.now += 1
            backend.maintain()
            states = {s.runtime: s for s in zygotes.states()}
            assert states["generic"].state == "stopped"
            # The eager runtime's zygote is kept although nothing uses it.
            assert states["sklearn"].state == "ready"
            while first.is_alive():
                await asyncio.sleep(0.05)
            assert backend.helper_rss_bytes() == zygotes.running["sklearn"].rss_bytes()
            backend.maintain()  # not restarted by upkeep: nothing asked for it
            assert "generic" not in zygotes.running and "generic" not in zygotes.wanted

            # The next cold start of the runtime starts it again and is forked from it.
            backend.use_runtimes({"generic"})
            again = await forked(backend, model_dir, "generic")
            second = zygotes.running["generic"]
            assert second is not first and again.zygote is second
            assert {s.runtime: s.state for s in zygotes.states()}["generic"] == "ready"
            await again.stop()
        finally:
            await backend.close()

    asyncio.run(run())


def test_a_zygote_in_use_is_kept_however_long_it_idles(model_dir: Path) -> None:
    clock = Clock()

    async def run() -> None:
        backend = backend_with({"generic": ("numpy",)}, clock)
        try:
            backend.use_runtimes({"generic"})
            worker = await forked(backend, model_dir, "generic")
            zygote = backend.zygote_supervisor.running["generic"]
            await worker.stop()
            while zygote.has_children():
                await asyncio.sleep(0.05)
            # An endpoint scaled to zero still uses its runtime: its next cold start needs the zygote.
            clock.now += 10 * 3600
            backend.maintain()
            assert backend.zygote_supervisor.running["generic"] is zygote and zygote.is_alive()
        finally:
            await backend.close()

    asyncio.run(run())
