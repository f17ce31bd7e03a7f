"""Pure serving rules: admission, and CPU threads sized by memory."""

from __future__ import annotations

import os

import pytest

from coldbrew.scaling.admission import Admission, admit
from coldbrew.scaling.messages import PoolConfig
from coldbrew.serving.sizing import threads_for


@pytest.mark.parametrize(
    "idle, live, starting, concurrent, expected",
    [
        (1, 3, 0, 2, Admission.WARM),
        (0, 0, 0, 0, Admission.COLD_START),
        (0, 2, 0, 2, Admission.COLD_START),
        (0, 3, 1, 2, Admission.WAIT),  # environments for 4 exist or start, only 2 running
        (0, 4, 0, 4, Admission.THROTTLE),
        (0, 1, 0, 4, Admission.THROTTLE),  # 3 waiting for the one environment
    ],
)
def test_admission(idle: int, live: int, starting: int, concurrent: int, expected: Admission) -> None:
    assert (
        admit(idle=idle, live=live, starting=starting, concurrent=concurrent, max_concurrency=4) is expected
    )


def config(memory_mb: int, serverless: bool = True, environment_concurrency: int = 1) -> PoolConfig:
    return PoolConfig(
        endpoint="e",
        variant="v",
        serverless=serverless,
        memory_mb=memory_mb,
        max_concurrency=environment_concurrency,
        min_environments=0,
        environment_concurrency=environment_concurrency,
        idle_timeout_s=1.0,
    )


def test_threads_grow_with_memory_up_to_the_cores() -> None:
    cores = os.cpu_count() or 1
    assert threads_for(config(1024)) == 1
    assert threads_for(config(2048)) == 1
    assert threads_for(config(3072)) == min(2, cores)
    assert threads_for(config(6144)) == min(3, cores)
    assert threads_for(config(8192, serverless=False, environment_concurrency=4)) == min(4, cores)
