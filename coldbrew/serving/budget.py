"""The machine's memory budget: the sum of MemorySizeInMB of live environments stays under it.

When a cold start needs room, idle environments of *other* variants are released first, least
valuable first; only when nothing can be released is the invocation throttled. Value is recency:
the environment idle the longest is the one least likely to be used soon (and the one a keep-alive
policy would release first anyway). Environments a variant must keep warm (provisioned
concurrency, provisioned instances) are never released for another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from coldbrew.errors import ThrottlingException

if TYPE_CHECKING:
    from coldbrew.serving.pool import VariantPool

log = logging.getLogger("coldbrew.serving")


class MemoryBudget:
    def __init__(self, budget_mb: int, pools: Callable[[], Iterable[VariantPool]]) -> None:
        self.budget_mb = budget_mb
        self.used_mb = 0
        self.evictions = 0
        self._pools = pools

    @property
    def free_mb(self) -> int:
        return self.budget_mb - self.used_mb

    def reserve(self, memory_mb: int, requester: VariantPool) -> None:
        """Take ``memory_mb`` for a new environment of ``requester`` or raise ThrottlingException."""
        if memory_mb > self.budget_mb:
            raise ThrottlingException(
                f"MemorySizeInMB {memory_mb} is larger than this machine's memory budget of "
                f"{self.budget_mb} MB "
                "(COLDBREW_MEMORY_BUDGET_MB)."
            )
        if memory_mb > self.free_mb:
            self._evict(memory_mb - self.free_mb, requester)
        if memory_mb > self.free_mb:
            raise ThrottlingException(
                f"The machine's memory budget of {self.budget_mb} MB is held by busy environments; "
                "retry with backoff, or raise COLDBREW_MEMORY_BUDGET_MB."
            )
        self.used_mb += memory_mb

    def release(self, memory_mb: int) -> None:
        self.used_mb -= memory_mb

    def _evict(self, needed_mb: int, requester: VariantPool) -> None:
        candidates = []
        for pool in self._pools():
            if pool is requester:
                continue
            candidates += [(env.last_used, pool, env) for env in pool.evictable()]
        freed = 0
        for _, pool, env in sorted(candidates, key=lambda c: c[0]):
            if freed >= needed_mb:
                break
            log.info(
                "releasing idle worker %d of %s/%s to make room (memory budget)",
                env.worker.pid,
                pool.config.endpoint,
                pool.config.variant,
            )
            freed += env.memory_mb
            self.evictions += 1
            pool.discard(env)
