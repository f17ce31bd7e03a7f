"""The dashboard's ASGI app: pages under ``/ui``, their JSON under ``/ui/api/``, static files.

Handlers do three things only: copy what runs now off serving's state (on the event loop, no I/O),
hand everything else — reads, views, template rendering — to a worker thread, and check the
viewer's permissions. The routes and the JSON they answer are documented in ``docs/ui.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coldbrew.logs.names import group_name
from coldbrew.metering.prices import PriceTable, load_prices
from coldbrew.ui import access, live, reads, whatif
from coldbrew.ui.actions import MAX_INVOKE_BYTES, Api, new_config_name, updated_config
from coldbrew.ui.formatting import FILTERS, plain, to_json
from coldbrew.ui.guard import Guard, Who, csrf_ok
from coldbrew.ui.loaders import Loaders, StoreNotReady
from coldbrew.ui.login_limit import LoginLimiter
from coldbrew.ui.periods import RANGES
from coldbrew.ui.sessions import FILE_NAME as SESSIONS_FILE
from coldbrew.ui.sessions import SessionFile, Sessions, cookie_header
from coldbrew.ui.sources import UiSources

HERE = Path(__file__).parent
UPLOT = "1.6.32"
"""The charting library's version (npm package ``uplot``), shipped in ``static/``."""

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
_HEADERS = [
    (b"content-security-policy", _CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
COST_DAYS = (7, 14, 31)

Handler = Callable[[Request, Who], Awaitable[Response]]


class Dashboard:
    def __init__(self, sources: UiSources, prices: PriceTable | None = None) -> None:
        self.sources = sources
        self.prices = prices or load_prices()
        self.loaders = Loaders(sources, self.prices)
        # Logged-in sessions survive a restart: kept in the data dir, next to the store.
        self.sessions = Sessions(SessionFile(sources.db_path.parent / SESSIONS_FILE))
        self.limiter = LoginLimiter()
        self.guard = Guard(self.sessions, sources.keys, sources.region, sources.account_id, self.limiter)
        self.api = Api(sources.api)
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(FILTERS)
        self.templates.globals.update(uplot=UPLOT, auth_enabled=self.guard.auth_enabled)
        page, api = self._page, self._api
        routes = [
            Route("/ui", page(self.endpoints_page)),
            Route("/ui/endpoints/{name}", page(self.endpoint_page)),
            Route("/ui/cost", page(self.cost_page)),
            Route("/ui/machine", page(self.machine_page)),
            Route("/ui/login", self.login_form, methods=["GET"]),
            Route("/ui/login", self.login, methods=["POST"]),
            Route("/ui/logout", self.logout, methods=["POST"]),
            Route("/ui/api/session", api(self.api_session)),
            Route("/ui/api/endpoints", api(self.api_endpoints)),
            Route("/ui/api/live", api(self.api_live)),
            Route("/ui/api/endpoints/{name}", api(self.api_endpoint), methods=["GET"]),
            Route("/ui/api/endpoints/{name}", api(self.api_delete, acts=True), methods=["DELETE"]),
            Route("/ui/api/endpoints/{name}/metrics", api(self.api_metrics)),
            Route("/ui/api/endpoints/{name}/environments", api(self.api_environments)),
            Route("/ui/api/endpoints/{name}/logs", api(self.api_logs)),
            Route("/ui/api/endpoints/{name}/invoke", api(self.api_invoke, acts=True), methods=["POST"]),
            Route(
                "/ui/api/endpoints/{name}/serverless-config",
                api(self.api_update, acts=True),
                methods=["POST"],
            ),
            Route("/ui/api/cost", api(self.api_cost)),
            Route("/ui/api/simulate", api(self.api_simulate, acts=True), methods=["POST"]),
            Route("/ui/api/machine", api(self.api_machine)),
            Mount("/ui/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        self.app: ASGIApp = _SecurityHeaders(GZipMiddleware(Starlette(routes=routes), minimum_size=1024))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    # --- plumbing ------------------------------------------------------------------------------

    def _render(self, name: str, who: Who, **context: Any) -> str:
        return self.templates.get_template(name).render(
            viewer=who.viewer, csrf=who.session.csrf, auth_enabled=self.guard.auth_enabled, **context
        )

    def _finish(self, response: Response, who: Who, started: float | None = None) -> Response:
        if started is not None:
            # The server's own time for the response (reads, view, rendering), for the browser's
            # network panel and bench/ui.py.
            response.headers["server-timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        if who.fresh:
            response.headers.append("set-cookie", cookie_header(who.session, self.sources.secure_cookies))
        if "cache-control" not in response.headers:
            response.headers["cache-control"] = "no-store"
        return response

    def _page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            who = await run_in_threadpool(self.guard.resolve, request)
            if who is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", status_code=303)
            try:
                response = await handler(request, who)
            except StoreNotReady as exc:
                response = await self._error_page(who, 503, "coldbrew is starting", str(exc))
            return self._finish(response, who, started)

        return endpoint

    def _api(self, handler: Handler, acts: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            who = await run_in_threadpool(self.guard.resolve, request)
            if who is None:
                return _json_error(
                    401, "NotLoggedIn", "Log in at /ui/login: this server requires an access key."
                )
            if acts and not csrf_ok(who, request):
                return self._finish(_json_error(403, "InvalidCsrfToken", _CSRF_MESSAGE), who)
            try:
                response = await handler(request, who)
            except StoreNotReady as exc:
                response = _json_error(503, "ServiceUnavailable", str(exc))
            return self._finish(response, who, started)

        return endpoint

    async def _error_page(self, who: Who, status: int, title: str, message: str) -> Response:
        html = await run_in_threadpool(self._render, "error.html", who, title=title, message=message, nav="")
        return HTMLResponse(html, status_code=status)

    async def _denied_page(self, who: Who, action: str, resource: str | None) -> Response:
        return await self._error_page(who, 403, "Not allowed", _denied_message(who, action, resource))

    # --- pages ---------------------------------------------------------------------------------

    async def endpoints_page(self, request: Request, who: Who) -> Response:
        if not who.viewer.can(access.LIST_ENDPOINTS):
            return await self._denied_page(who, access.LIST_ENDPOINTS, None)
        state = live.snapshot(self.sources.serving)

        def render() -> str:
            view = self.loaders.endpoints(state)
            return self._render("endpoints.html", who, page=view, nav="endpoints")

        return HTMLResponse(await run_in_threadpool(render))

    async def endpoint_page(self, request: Request, who: Who) -> Response:
        name = request.path_params["name"]
        arn = who.viewer.endpoint_arn(name)
        if not who.viewer.can(access.DESCRIBE_ENDPOINT, arn):
            return await self._denied_page(who, access.DESCRIBE_ENDPOINT, arn)
        range_name = request.query_params.get("range", "1h")
        if range_name not in RANGES:
            range_name = "1h"
        state = live.snapshot(self.sources.serving)

        def render() -> str | None:
            view = self.loaders.endpoint(name, who.viewer, state)
            if view is None:
                return None
            return self._render(
                "endpoint.html",
                who,
                page=view,
                nav="endpoints",
                ranges=list(RANGES),
                range=range_name,
                may=who.viewer.may_act_on(view.row.name),
                may_metrics=who.viewer.can(access.METRICS),
                config_json=json.dumps(view.config, indent=2, default=str),
            )

        html = await run_in_threadpool(render)
        if html is None:
            return await self._error_page(who, 404, "No such endpoint", f"There is no endpoint named {name}.")
        return HTMLResponse(html)

    async def cost_page(self, request: Request, who: Who) -> Response:
        if not who.viewer.can(access.LIST_ENDPOINTS):
            return await self._denied_page(who, access.LIST_ENDPOINTS, None)
        days = _days(request)

        def render() -> str:
            view = self.loaders.cost(days)
            return self._render(
                "cost.html",
                who,
                page=view,
                nav="cost",
                day_choices=COST_DAYS,
                chosen=days,
                form=whatif.WhatIf(),
            )

        return HTMLResponse(await run_in_threadpool(render))

    async def machine_page(self, request: Request, who: Who) -> Response:
        if not who.viewer.can(access.MACHINE):
            return await self._denied_page(who, access.MACHINE, None)
        state, zygotes = live.snapshot(self.sources.serving), self._zygotes()

        def render() -> str:
            return self._render("machine.html", who, page=self.loaders.machine(state, zygotes), nav="machine")

        return HTMLResponse(await run_in_threadpool(render))

    def _zygotes(self) -> list[tuple[str, int, bool]]:
        supervisor = self.sources.zygotes
        if supervisor is None:
            return []
        return [(runtime, z.process.pid, z.is_alive()) for runtime, z in sorted(supervisor.running.items())]

    # --- login ---------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if not self.guard.auth_enabled:
            return RedirectResponse("/ui", status_code=303)
        who = self.guard.anonymous(request)
        return self._finish(await self._login_page(who, _next(request.query_params.get("next")), None), who)

    async def _login_page(self, who: Who, next_url: str, error: str | None, status: int = 200) -> Response:
        html = await run_in_threadpool(
            self._render, "login.html", who, next_url=next_url, error=error, nav=""
        )
        return HTMLResponse(html, status_code=status)

    async def login(self, request: Request) -> Response:
        if not self.guard.auth_enabled or self.sources.keys is None:
            return RedirectResponse("/ui", status_code=303)
        who = self.guard.anonymous(request)
        form = await _form(request)
        next_url = _next(str(form.get("next", "")))
        if not csrf_ok(who, request, str(form.get("csrf", ""))):
            return self._finish(await self._login_page(who, next_url, _CSRF_MESSAGE, 403), who)
        address = _address(request)
        wait = self.limiter.retry_after(address)
        if wait is not None:
            response = await self._login_page(who, next_url, self.limiter.message(wait), 429)
            response.headers["retry-after"] = str(max(1, round(wait)))
            return self._finish(response, who)
        key_id = str(form.get("access_key_id", "")).strip()
        secret = str(form.get("secret_access_key", ""))
        key = self.guard.login(key_id, secret, address)
        if key is None:
            message = (
                "That access key ID and secret access key do not match a key of this server that may "
                "use the dashboard (coldbrew:ViewDashboard)."
            )
            return self._finish(await self._login_page(who, next_url, message, 401), who)
        # A new id on login: a session id seen before it (fixation) is worth nothing after it.
        await run_in_threadpool(self.sessions.end, who.session.id)
        session = await run_in_threadpool(self.sessions.new, key.access_key_id)
        response = RedirectResponse(next_url, status_code=303)
        response.headers.append("set-cookie", cookie_header(session, self.sources.secure_cookies))
        return response

    async def logout(self, request: Request) -> Response:
        who = await run_in_threadpool(self.guard.resolve, request)
        if who is not None:
            form = await _form(request)
            if not csrf_ok(who, request, str(form.get("csrf", ""))):
                return _json_error(403, "InvalidCsrfToken", _CSRF_MESSAGE)
            await run_in_threadpool(self.sessions.end, who.session.id)
        response = RedirectResponse("/ui/login" if self.guard.auth_enabled else "/ui", status_code=303)
        response.headers.append("set-cookie", cookie_header(None, self.sources.secure_cookies))
        return response

    # --- the JSON API --------------------------------------------------------------------------

    async def api_session(self, request: Request, who: Who) -> Response:
        return _json(
            {
                "AuthEnabled": self.guard.auth_enabled,
                "AccessKeyId": who.viewer.key.access_key_id if who.viewer.key else None,
                "CsrfToken": who.session.csrf,
            }
        )

    async def api_endpoints(self, request: Request, who: Who) -> Response:
        if not who.viewer.can(access.LIST_ENDPOINTS):
            return _denied_json(who, access.LIST_ENDPOINTS, None)
        state = live.snapshot(self.sources.serving)
        return _json(await run_in_threadpool(self.loaders.endpoints, state))

    async def api_live(self, request: Request, who: Who) -> Response:
        if not who.viewer.can(access.LIST_ENDPOINTS):
            return _denied_json(who, access.LIST_ENDPOINTS, None)
        state = live.snapshot(self.sources.serving)
        counts: dict[str, dict[str, int]] = {}
        for variant in state.variants:
            row = counts.setdefault(variant.endpoint, {live.BUSY: 0, live.IDLE: 0, live.STARTING: 0})
            for env in variant.environments:
                if env.state in row:
                    row[env.state] += 1
        return _json({"TakenAt": state.taken_at, "Endpoints": counts})

    async def api_endpoint(self, request: Request, who: Who) -> Response:
        name = request.path_params["name"]
        arn = who.viewer.endpoint_arn(name)
        if not who.viewer.can(access.DESCRIBE_ENDPOINT, arn):
            return _denied_json(who, access.DESCRIBE_ENDPOINT, arn)
        state = live.snapshot(self.sources.serving)
        view = await run_in_threadpool(self.loaders.endpoint, name, who.viewer, state)
        return _json(view) if view is not None else _not_found(name)

    async def api_metrics(self, request: Request, who: Who) -> Response:
        if not who.viewer.can(access.METRICS):
            return _denied_json(who, access.METRICS, None)
        range_name = request.query_params.get("range", "1h")
        if range_name not in RANGES:
            return _json_error(400, "ValidationError", f"range must be one of {', '.join(RANGES)}.")
        name = request.path_params["name"]
        view = await run_in_threadpool(self.loaders.charts, name, range_name)
        return _json(view) if view is not None else _not_found(name)

    async def api_environments(self, request: Request, who: Who) -> Response:
        name = request.path_params["name"]
        arn = who.viewer.endpoint_arn(name)
        if not who.viewer.can(access.DESCRIBE_ENDPOINT, arn):
            return _denied_json(who, access.DESCRIBE_ENDPOINT, arn)
        state = live.snapshot(self.sources.serving)
        mine = live.LiveState(state.taken_at, tuple(state.of(name)), state.memory_budget_mb, state.used_mb, 0)
        found = await run_in_threadpool(live.with_memory, mine)
        return _json({"TakenAt": found.taken_at, "Variants": [plain(v) for v in found.variants]})

    async def api_logs(self, request: Request, who: Who) -> Response:
        name = request.path_params["name"]
        group = group_name(name)
        if not who.viewer.can(access.LOGS, who.viewer.log_group_arn(group)):
            return _denied_json(who, access.LOGS, who.viewer.log_group_arn(group))
        limit = _int(request.query_params.get("limit"), 50, 1, 1000)
        lines = await run_in_threadpool(self.loaders.log_lines, name, limit)
        return _json({"LogGroupName": group, "Events": [plain(line) for line in lines]})

    async def api_cost(self, request: Request, who: Who) -> Response:
        if not who.viewer.can(access.LIST_ENDPOINTS):
            return _denied_json(who, access.LIST_ENDPOINTS, None)
        return _json(await run_in_threadpool(self.loaders.cost, _days(request)))

    async def api_machine(self, request: Request, who: Who) -> Response:
        if not who.viewer.can(access.MACHINE):
            return _denied_json(who, access.MACHINE, None)
        state, zygotes = live.snapshot(self.sources.serving), self._zygotes()
        return _json(await run_in_threadpool(self.loaders.machine, state, zygotes))

    async def api_simulate(self, request: Request, who: Who) -> Response:
        if not who.viewer.can(access.LIST_ENDPOINTS):
            return _denied_json(who, access.LIST_ENDPOINTS, None)
        try:
            what = whatif.WhatIf.model_validate(await _json_body(request))
        except (ValidationError, ValueError) as exc:
            return _json_error(400, "ValidationError", _validation_message(exc))
        return _json(await run_in_threadpool(whatif.run, what, self.prices))

    # --- actions: through the API clients use ----------------------------------------------------

    async def api_delete(self, request: Request, who: Who) -> Response:
        answer = await self.api.control(
            who.viewer, "DeleteEndpoint", {"EndpointName": request.path_params["name"]}
        )
        return _json({"Ok": answer.ok, "Code": answer.code, "Message": answer.message}, answer.status)

    async def api_invoke(self, request: Request, who: Who) -> Response:
        try:
            document = await _json_body(request, MAX_INVOKE_BYTES * 2)
            body = document.get("Body", "")
            content_type = document.get("ContentType") or "application/json"
            accept = document.get("Accept") or None
            if not isinstance(body, str) or not isinstance(content_type, str):
                raise ValueError("Body and ContentType must be strings")
        except ValueError as exc:
            return _json_error(400, "ValidationError", str(exc))
        answer = await self.api.invoke(
            who.viewer, request.path_params["name"], body.encode(), content_type, accept
        )
        return _json(answer, 200 if answer.code is None else answer.status)

    async def api_update(self, request: Request, who: Who) -> Response:
        name = request.path_params["name"]
        try:
            document = await _json_body(request)
            changes = _serverless_changes(document.get("Variants"))
        except ValueError as exc:
            return _json_error(400, "ValidationError", str(exc))
        stored = await run_in_threadpool(self._stored, name)
        if stored is None:
            return _not_found(name)
        config_name = new_config_name(stored.name)
        try:
            config = updated_config(stored.deployment["Config"], config_name, changes)
        except ValueError as exc:
            return _json_error(400, "ValidationError", str(exc))
        created = await self.api.control(who.viewer, "CreateEndpointConfig", config)
        if not created.ok:
            return _json({"Ok": False, "Code": created.code, "Message": created.message}, created.status)
        updated = await self.api.control(
            who.viewer, "UpdateEndpoint", {"EndpointName": stored.name, "EndpointConfigName": config_name}
        )
        status = updated.status
        return _json(
            {
                "Ok": updated.ok,
                "Code": updated.code,
                "Message": updated.message,
                "EndpointConfigName": config_name,
            },
            status,
        )

    def _stored(self, name: str) -> reads.StoredEndpoint | None:
        conn = self.loaders.db.connection()
        return reads.endpoint(conn, name) if conn is not None else None


_CSRF_MESSAGE = "The form or request did not carry this session's CSRF token; reload the page and try again."


class _SecurityHeaders:
    """Every dashboard response gets a strict Content-Security-Policy and frame and sniffing
    guards: the pages load only their own scripts and styles, and no site can frame them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


def _json(value: Any, status: int = 200) -> Response:
    return Response(to_json(value), status_code=status, media_type="application/json")


def _json_error(status: int, code: str, message: str) -> Response:
    return _json({"Ok": False, "Code": code, "Message": message}, status)


def _denied_message(who: Who, action: str, resource: str | None) -> str:
    return (
        f"Access key {who.viewer.name} is not authorized to perform: {action} on resource: {resource or '*'}."
    )


def _denied_json(who: Who, action: str, resource: str | None) -> Response:
    return _json_error(403, "AccessDeniedException", _denied_message(who, action, resource))


def _not_found(name: str) -> Response:
    return _json_error(404, "ResourceNotFound", f"There is no endpoint named {name}.")


async def _json_body(request: Request, limit: int = 64 * 1024) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ValueError(f"The request body is larger than {limit:,} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ValueError(f"The request body is larger than {limit:,} bytes.")
        chunks.append(chunk)
    try:
        document = json.loads(b"".join(chunks) or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"The request body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError("The request body must be a JSON object.")
    return document


async def _form(request: Request, limit: int = 16 * 1024) -> dict[str, str]:
    """A small urlencoded form (login, logout), read within ``limit`` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return {}
        chunks.append(chunk)
    try:
        return dict(parse_qsl(b"".join(chunks).decode("utf-8"), max_num_fields=16))
    except (UnicodeDecodeError, ValueError):
        return {}


def _serverless_changes(raw: Any) -> dict[str, dict[str, int]]:
    if not isinstance(raw, dict) or not raw:
        raise ValueError('Variants must be an object: {"<VariantName>": {"MemorySizeInMB": ..., ...}}.')
    changes: dict[str, dict[str, int]] = {}
    for variant, fields in raw.items():
        if not isinstance(fields, dict):
            raise ValueError(f"Variants.{variant} must be an object.")
        change = {}
        for field in ("MemorySizeInMB", "MaxConcurrency", "ProvisionedConcurrency"):
            if field in fields:
                value = fields[field]
                if isinstance(value, str) and value.strip().isdigit():
                    value = int(value)
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"Variants.{variant}.{field} must be a whole number.")
                change[field] = value
        unknown = set(fields) - {"MemorySizeInMB", "MaxConcurrency", "ProvisionedConcurrency"}
        if unknown:
            raise ValueError(f"Variants.{variant}: unknown field {sorted(unknown)[0]}.")
        changes[str(variant)] = change
    return changes


def _validation_message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors())
    return str(exc)


def _days(request: Request) -> int:
    days = _int(request.query_params.get("days"), 7, 1, 31)
    return days


def _int(text: str | None, default: int, low: int, high: int) -> int:
    try:
        value = int(text) if text is not None else default
    except ValueError:
        return default
    return max(low, min(high, value))


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _next(text: str | None) -> str:
    """Where to go after logging in: a dashboard path only (never another site)."""
    if text and text.startswith("/ui") and not text.startswith("//") and "\\" not in text:
        return text
    return "/ui"
