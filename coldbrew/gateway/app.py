"""The gateway's ASGI app: routes only; everything it serves is built by ``Services``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from coldbrew.async_inference.metrics import BacklogCollector
from coldbrew.capture.metrics import CaptureCollector
from coldbrew.gateway.async_invocations_api import AsyncInvocationsEndpoint
from coldbrew.gateway.auth_gate import AuthGate, auth_config, key_ring
from coldbrew.gateway.control_api import ControlEndpoint
from coldbrew.gateway.invocations_api import InvocationRouter, InvocationsEndpoint
from coldbrew.gateway.service_router import ServiceRouter
from coldbrew.gateway.ui_mount import UiMount
from coldbrew.logs.metrics import LogsCollector
from coldbrew.metering.prometheus import MachineGauges, registry_for
from coldbrew.services import Services
from coldbrew.serving.metrics import ScalingCollector
from coldbrew.settings import Settings
from coldbrew.ui import Dashboard, UiSources


def create_app(settings: Settings) -> ASGIApp:
    services = Services(settings)
    control = ControlEndpoint(services.control, settings.account_id, settings.region)
    invocations = InvocationsEndpoint(
        services.serving, services.control, settings.account_id, services.meter, services.capture
    )
    async_invocations = AsyncInvocationsEndpoint(
        services.serving, services.control, services.dispatcher, settings.account_id
    )
    core = services.serving.pools.core
    zygotes = services.backend.zygote_supervisor
    registry = registry_for(
        services.meter,
        MachineGauges(
            zygote_resident_bytes=services.backend.helper_rss_bytes,
            memory_budget_mb=lambda: core.memory_budget_mb,
            memory_budget_used_mb=lambda: core.used_mb,
            budget_evictions=lambda: core.evictions,
            zygote_states=zygotes.states if zygotes is not None else None,
            memory_budget_helpers_mb=lambda: core.helpers_mb,
        ),
    )
    registry.register(ScalingCollector(services.serving))
    registry.register(BacklogCollector(services.backlog))
    registry.register(CaptureCollector(services.capture))
    if services.logs is not None:
        registry.register(LogsCollector(services.logs))

    async def metrics(request: Request) -> Response:
        def render() -> bytes:
            services.meter.flush()  # so a scrape sees every invocation answered before it
            return generate_latest(registry)

        return Response(await run_in_threadpool(render), media_type=CONTENT_TYPE_LATEST)

    async def ping(request: Request) -> Response:
        return PlainTextResponse("")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.close()

    routes = [
        Route("/", control.handle, methods=["POST"]),
        Route("/ping", ping, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    # The invoke path is answered in front of Starlette; everything else (and the lifespan) goes on.
    sagemaker = InvocationRouter(Starlette(routes=routes, lifespan=lifespan), invocations, async_invocations)
    # S3, CloudWatch and CloudWatch Logs on the same port, told apart by what the client signed for.
    routed = ServiceRouter(sagemaker, services.aws_apis())
    # In front of everything: the Host check always, signatures and policies when auth is on.
    keys = key_ring(settings) if settings.auth_enabled else None
    gate = AuthGate(routed, auth_config(settings), keys)
    # The dashboard (/ui): its own sessions over the same keys and policies, its actions sent to
    # the API behind the gate.
    dashboard = Dashboard(
        UiSources(
            serving=services.serving,
            api=routed,
            db_path=settings.db_path,
            logs_db_path=settings.logs_db_path if services.logs is not None else None,
            async_db_path=settings.async_db_path,
            flush_meter=services.meter.flush,
            meter_writes=services.meter.written,
            region=settings.region,
            account_id=settings.account_id,
            keys=keys,
            secure_cookies=settings.tls_cert is not None,
            zygotes=services.backend.zygote_supervisor,
            capture=services.capture,
        )
    )
    return UiMount(dashboard, gate, gate.hosts)
