"""What a memory size buys on the machine the server runs on, and when more memory cannot help.

The server gives a serverless environment numerical-library threads in proportion to its memory
(one vCPU per 1,769 MB, as Lambda) capped at the machine's cores, and a cgroup CPU share in
proportion to its memory (:mod:`coldbrew.serving.sizing`, :mod:`coldbrew.backends.cgroups`). So
latency can only fall with memory where the thread count rises, or where the CPU is contended.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from coldbrew.scaling.messages import PoolConfig
from coldbrew.serving.sizing import MB_PER_VCPU, threads_for


def threads_at(memory_mb: int) -> int:
    """The threads the server gives a serverless environment of ``memory_mb`` (here: the server's
    own rule, evaluated on this machine, which is the server's when tune runs on it)."""
    config = PoolConfig(
        endpoint="tune",
        variant="tune",
        serverless=True,
        memory_mb=memory_mb,
        max_concurrency=1,
        min_environments=0,
    )
    return threads_for(config)


def sizing_notes(
    memory_sizes: Sequence[int],
    cpu_count: int | None,
    observed_p50_ms: dict[int, float],
    concurrency: Sequence[int] = (),
) -> list[str]:
    """Plain sentences for the report: where memory buys no more CPU here, and what was observed.

    ``observed_p50_ms`` maps memory size to its warm p50 at the lowest concurrency measured.
    """
    cores = cpu_count or os.cpu_count() or 1
    notes = [
        f"The server sizes CPU by memory: {MB_PER_VCPU:,} MB buys one vCPU (numerical-library threads, "
        f"rounded, at least 1, at most the machine's {cores} core(s)), and a cgroup CPU share in proportion "
        "to memory, which only matters when environments compete for the CPU."
    ]
    by_threads: dict[int, list[int]] = {}
    for memory in sorted(set(memory_sizes)):
        by_threads.setdefault(threads_at(memory), []).append(memory)
    for threads, sizes in sorted(by_threads.items()):
        if len(sizes) > 1:
            notes.append(
                f"{', '.join(f'{m:,}' for m in sizes)} MB all run with {threads} thread(s) here: between "
                "them, more memory buys no more threads, so latency should not fall for a model alone "
                "on the machine."
            )
    capped = [m for m in sorted(set(memory_sizes)) if round(m / MB_PER_VCPU) > cores]
    if capped:
        notes.append(
            f"This machine has {cores} core(s): sizes beyond {cores} vCPU(s) ({cores * MB_PER_VCPU:,} MB) — "
            f"{', '.join(f'{m:,}' for m in capped)} MB — get no more threads than {cores}; on SageMaker they "
            "would get more CPU, so these figures understate what they buy there."
        )
    # Each environment serves one request at a time with its own threads: at concurrency c, c
    # environments' threads share the cores, and past the core count they queue for them.
    top = max(concurrency, default=1)
    crowded = [m for m in sorted(set(memory_sizes)) if top * threads_at(m) > cores]
    if top > 1 and crowded:
        notes.append(
            f"At concurrency {top}, {', '.join(f'{m:,}' for m in crowded)} MB run more threads "
            f"({top} environments x their threads) than the {cores} core(s): requests wait for the CPU, "
            "so latency under load rises with memory here, where on SageMaker each environment has "
            "its own vCPUs."
        )
    if len(observed_p50_ms) >= 2:
        smallest, largest = min(observed_p50_ms), max(observed_p50_ms)
        low, high = observed_p50_ms[smallest], observed_p50_ms[largest]
        if high < low * 0.9:
            verdict = f"fell from {low:.1f} ms at {smallest:,} MB to {high:.1f} ms at {largest:,} MB"
        elif high > low * 1.1:
            verdict = (
                f"rose from {low:.1f} ms at {smallest:,} MB to {high:.1f} ms at {largest:,} MB (noise, other "
                "work on the machine, or more threads than the cores have room for)"
            )
        else:
            verdict = (
                f"did not change with memory ({low:.1f} ms at {smallest:,} MB, "
                f"{high:.1f} ms at {largest:,} MB, within 10%): the model is not limited by the CPU "
                "memory buys here (it runs single-threaded, or the sizes get the same threads, "
                "or the time is in I/O and overhead)"
            )
        notes.append(f"Observed: warm p50 {verdict}.")
    return notes
