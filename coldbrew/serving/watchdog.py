"""The RSS watchdog: stops workers over their memory size where no cgroup limits them."""

from __future__ import annotations

import logging

from coldbrew.serving.pools import Pools

log = logging.getLogger("coldbrew.serving")

MiB = 1024 * 1024


def watch_memory(pools: Pools) -> None:
    for env in list(pools.environments.values()):
        if env.worker.memory_enforced or env.stop_reason is not None:
            continue  # the kernel enforces it exactly, or it is being stopped already
        rss = env.worker.rss_bytes()
        if rss <= env.memory_mb * MiB:
            continue
        env.stop_reason = (
            f"The model used {rss / MiB:.0f} MB, more than its memory size of {env.memory_mb} MB, "
            "and its worker was stopped; deploy it with a larger MemorySizeInMB."
        )
        log.warning("worker %d stopped: %s", env.worker.pid, env.stop_reason)
        pools.lost(env)
