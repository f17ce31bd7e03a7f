"""The dashboard's actions, made as requests to the gateway's own API, in process.

Deleting an endpoint, changing its serverless configuration and invoking it are exactly the calls a
client makes (``DeleteEndpoint``; ``CreateEndpointConfig`` then ``UpdateEndpoint``;
``POST /endpoints/<name>/invocations``), sent to the gateway's app behind its authentication gate:
they are validated, answered and metered as any client's. The gate's own decision is made here
instead, on the session's key: :func:`coldbrew.auth.actions.needs_for` finds what the request needs
from the request itself, and the key's policy must allow all of it.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from starlette.types import ASGIApp

from coldbrew.auth.actions import RequestFacts, needs_for
from coldbrew.ui.access import Viewer

_JSON = "application/x-amz-json-1.1"
MAX_INVOKE_BYTES = 6 * 1024 * 1024
"""The larger of SageMaker's payload limits (6 MB, provisioned); the API refuses past its own."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    code: str | None
    """AWS's error code when the call failed."""
    message: str | None
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status < 400


@dataclass(frozen=True, slots=True)
class InvokeAnswer:
    status: int
    content_type: str | None
    body: str
    """The response body as text, or base64 when it is not UTF-8 (``base64`` says which)."""
    base64: bool
    code: str | None
    message: str | None


def _denied(viewer: Viewer, action: str, resource: str | None) -> Answer:
    return Answer(
        403,
        "AccessDeniedException",
        f"Access key {viewer.name} is not authorized to perform: {action} on resource: {resource or '*'}.",
        {},
    )


class Api:
    """A client of the gateway's app that never leaves the process."""

    def __init__(self, app: ASGIApp) -> None:
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://coldbrew.internal", timeout=None
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def _denial(
        self, viewer: Viewer, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> Answer | None:
        facts = RequestFacts(None, method, path, {}, headers, body, viewer.region, viewer.account)
        denied = viewer.allows(needs_for(facts))
        return None if denied is None else _denied(viewer, denied.action, denied.resource)

    async def control(self, viewer: Viewer, operation: str, request: dict[str, Any]) -> Answer:
        body = json.dumps(request).encode()
        headers = {"x-amz-target": f"SageMaker.{operation}", "content-type": _JSON}
        denied = self._denial(viewer, "POST", "/", headers, body)
        if denied is not None:
            return denied
        response = await self.client.post("/", content=body, headers=headers)
        document = response.json() if response.content else {}
        if response.status_code >= 400:
            return Answer(
                response.status_code,
                response.headers.get("x-amzn-errortype") or document.get("__type"),
                document.get("message") or document.get("Message"),
                document,
            )
        return Answer(response.status_code, None, None, document)

    async def invoke(
        self, viewer: Viewer, endpoint: str, payload: bytes, content_type: str, accept: str | None
    ) -> InvokeAnswer:
        path = f"/endpoints/{endpoint}/invocations"
        headers = {"content-type": content_type}
        if accept:
            headers["accept"] = accept
        denied = self._denial(viewer, "POST", path, headers, payload)
        if denied is not None:
            return InvokeAnswer(denied.status, None, "", False, denied.code, denied.message)
        response = await self.client.post(
            f"/endpoints/{quote(endpoint, safe='')}/invocations", content=payload, headers=headers
        )
        code = response.headers.get("x-amzn-errortype")
        message = None
        if code is not None:
            try:
                message = response.json().get("message")
            except ValueError:
                message = response.text[:2000]
        try:
            text, encoded = response.content.decode("utf-8"), False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(response.content).decode(), True
        return InvokeAnswer(
            response.status_code, response.headers.get("content-type"), text, encoded, code, message
        )


def new_config_name(endpoint: str, now: float | None = None) -> str:
    """A name for the endpoint config an update creates: the endpoint's, a mark and the time,
    within SageMaker's 63 characters."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() if now is None else now))
    suffix = f"-ui{stamp}"
    return endpoint[: 63 - len(suffix)].rstrip("-") + suffix


def updated_config(config: dict[str, Any], name: str, changes: dict[str, dict[str, int]]) -> dict[str, Any]:
    """A CreateEndpointConfig request: ``config`` (a deployed endpoint config) named ``name``, each
    variant in ``changes`` with its ServerlessConfig fields replaced."""
    # Tags stay on the old config: tagging on create needs sagemaker:AddTags, which an update should not.
    request = {k: v for k, v in config.items() if k not in ("EndpointConfigArn", "CreationTime", "Tags")}
    request["EndpointConfigName"] = name
    variants = []
    for variant in config.get("ProductionVariants", []):
        variant = dict(variant)
        change = changes.get(variant["VariantName"])
        if change is not None:
            if "ServerlessConfig" not in variant:
                raise ValueError(f"variant {variant['VariantName']} is not serverless")
            serverless = {**variant["ServerlessConfig"], **change}
            if not serverless.get("ProvisionedConcurrency"):
                serverless.pop("ProvisionedConcurrency", None)
            variant["ServerlessConfig"] = serverless
        variants.append(variant)
    unknown = set(changes) - {v["VariantName"] for v in variants}
    if unknown:
        raise ValueError(f"the endpoint has no variant {sorted(unknown)[0]}")
    request["ProductionVariants"] = variants
    return request
