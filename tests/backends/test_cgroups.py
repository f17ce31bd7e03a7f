"""Workers' cgroups on this host's real hierarchy: memory limits, and CPU weights by memory for an
endpoint's worker but the least weight and the idle class for a batch transform job's, so that a
job runs on what endpoints leave (niceness only weighs threads within one cgroup)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from coldbrew.backends.cgroups import MemoryCgroups


@pytest.fixture
def cgroups() -> Iterator[MemoryCgroups]:
    found = MemoryCgroups.detect()
    if found is None:
        pytest.skip("this host gives no memory cgroups to create (the RSS watchdog is used instead)")
    yield found
    found.remove()


def _cpu_file(cgroups: MemoryCgroups, name: str, file: str) -> Path:
    assert cgroups.cpu_base is not None
    return (cgroups.base if cgroups.v2 else cgroups.cpu_base) / name / file


def test_an_endpoints_worker_weighs_by_memory_and_a_jobs_worker_runs_idle(cgroups: MemoryCgroups) -> None:
    if cgroups.cpu_base is None:
        pytest.skip("this host's cpu controller is not delegated to coldbrew")
    endpoint = subprocess.Popen(["sleep", "30"])
    job = subprocess.Popen(["sleep", "30"])
    try:
        endpoint_cgroup = cgroups.attach(endpoint.pid, 2048)
        job_cgroup = cgroups.attach(job.pid, 8192, background=True)
        assert endpoint_cgroup is not None and job_cgroup is not None
        weight = "cpu.weight" if cgroups.v2 else "cpu.shares"
        endpoint_name, job_name = endpoint_cgroup.path.name, job_cgroup.path.name
        assert _cpu_file(cgroups, endpoint_name, weight).read_text().strip() == (
            "200" if cgroups.v2 else "2048"
        )
        # The least weight (1 in v2, 2 shares in v1; the idle class reads as 3 shares).
        assert int(_cpu_file(cgroups, job_name, weight).read_text()) <= 3
        idle = _cpu_file(cgroups, job_name, "cpu.idle")
        if idle.exists():  # the kernel's idle class for groups (Linux 5.15+)
            assert idle.read_text().strip() == "1"
            assert _cpu_file(cgroups, endpoint_name, "cpu.idle").read_text().strip() == "0"
        # The memory limit is the instance's either way.
        limit = job_cgroup.path / ("memory.max" if cgroups.v2 else "memory.limit_in_bytes")
        assert int(limit.read_text()) == 8192 * 1024 * 1024
    finally:
        for process in (endpoint, job):
            process.kill()
            process.wait()
    endpoint_cgroup.remove()
    job_cgroup.remove()
