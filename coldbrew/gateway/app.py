"""The gateway's ASGI app: routes only; everything it serves is built by ``Services``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from coldbrew.gateway.control_api import ControlEndpoint
from coldbrew.gateway.runtime_api import RuntimeEndpoint
from coldbrew.services import Services
from coldbrew.settings import Settings


def create_app(settings: Settings) -> Starlette:
    services = Services(settings)
    control = ControlEndpoint(services.control, settings.account_id, settings.region)
    runtime = RuntimeEndpoint(services.serving, services.store, settings.account_id)

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
        Route("/endpoints/{name}/invocations", runtime.invoke, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.services = services
    return app
