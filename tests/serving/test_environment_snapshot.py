"""``Serving.environment_snapshot`` (what the meter samples twice a second) from its cached index of
the endpoint table is what a walk of every endpoint gives, as endpoints and environments come and go."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from coldbrew.serving.router import LiveEndpoint, RoutedVariant
from coldbrew.serving.service import Serving
from tests.serving.test_pools import FakeBackend, config, settle, spec


def _walk(serving: Serving) -> list[Any]:
    """The snapshot as the plain walk over every endpoint and variant made it."""
    core = serving.pools.core
    out: list[Any] = []
    for name, endpoint in serving.endpoints.items():
        for variant in endpoint.variants.values():
            pool = core.pools.get(variant.pool)
            if pool is None:
                continue
            envs = [e for e in serving.pools.environments.values() if e.pool == variant.pool]
            if not envs:
                out.append((name, variant.name, pool.config.serverless, pool.config.memory_mb))
                continue
            readings = [
                {
                    "id": e.id,
                    "memory_mb": e.memory_mb,
                    "in_flight": core.envs[e.id].in_flight,
                    "rss_bytes": e.worker.rss_bytes(),
                }
                for e in envs
            ]
            out.append(
                {
                    "endpoint": name,
                    "variant": variant.name,
                    "serverless": True,
                    "memory_mb": pool.config.memory_mb,
                    "max_concurrency": pool.config.max_concurrency,
                    "environments": readings,
                }
            )
    return out


def _key(item: Any) -> tuple[str, str]:
    return (item[0], item[1]) if isinstance(item, tuple) else (item["endpoint"], item["variant"])


def _same(serving: Serving) -> None:
    assert sorted(serving.environment_snapshot(), key=_key) == sorted(_walk(serving), key=_key)


def test_snapshot_follows_the_endpoint_table_and_the_environments() -> None:
    async def main() -> None:
        backend = FakeBackend()
        serving = Serving(cast(Any, backend), cast(Any, None), cast(Any, None), 60.0, memory_budget_mb=8192)
        pools = {}

        def deploy(name: str, memory_mb: int = 1024) -> None:
            pool = serving.pools.add(config(name, memory_mb=memory_mb), spec(memory_mb))
            pools[name] = pool
            variant = RoutedVariant("v", pool, 1.0, True, memory_mb)
            serving.endpoints[name] = LiveEndpoint(name, {"v": variant}, f"f-{name}-{memory_mb}")

        for i in range(5):
            deploy(f"ep-{i}")
        await serving.pools.deploy(list(pools.values()), check=False)
        _same(serving)  # all idle
        assert all(isinstance(item, tuple) for item in serving.environment_snapshot())
        # An environment starts for ep-2: it is a dict now, the others still tuples.
        acquire = asyncio.ensure_future(serving.pools.acquire(pools["ep-2"]))
        await settle()
        backend.finish(0)
        lease = await acquire
        _same(serving)
        assert sum(isinstance(item, dict) for item in serving.environment_snapshot()) == 1
        # The table changes: a new endpoint, one replaced (a new memory size), one gone.
        deploy("ep-5")
        deploy("ep-1", memory_mb=2048)
        del serving.endpoints["ep-3"]
        _same(serving)
        assert ("ep-1", "v", True, 2048) in serving.environment_snapshot()
        serving.pools.release(lease)
        await settle()
        _same(serving)

    asyncio.run(main())
