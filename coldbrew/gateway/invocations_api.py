"""The invocations API: ``POST /endpoints/{name}/invocations`` as sagemaker-runtime speaks it
(REST JSON)."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Protocol

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from coldbrew.capture import CaptureWriter
from coldbrew.control.service import ControlPlane
from coldbrew.errors import ColdbrewError, InternalFailure, ModelError, ValidationError
from coldbrew.metering.meter import Meter
from coldbrew.metering.records import MeterRecord
from coldbrew.serving.invocation import PROVISIONED_MAX_PAYLOAD, SERVERLESS_MAX_PAYLOAD, Invocation
from coldbrew.serving.service import Serving
from coldbrew.wire.bodies import CLOSE, OversizeBody, declared_oversize, read_body

log = logging.getLogger("coldbrew.gateway")

CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
INFERENCE_ID = "x-amzn-sagemaker-inference-id"
_INFERENCE_ID = re.compile(r"\A\S[\x20-\x7e]*\Z")
PREFIX, SUFFIX, ASYNC_SUFFIX = "/endpoints/", "/invocations", "/async-invocations"

Headers = list[tuple[bytes, bytes]]


class Invoker(Protocol):
    async def invoke(self, name: str, headers: dict[str, str], receive: Receive) -> Reply: ...


class Reply:
    """An HTTP response as the ASGI server takes it."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


def invocation_error(error: ColdbrewError, request_id: str) -> Reply:
    body = json.dumps({"message": error.message, **error.fields}).encode()
    return Reply(
        error.status,
        [
            (b"content-type", b"application/json"),
            (b"x-amzn-errortype", error.code.encode()),
            (b"x-amzn-requestid", request_id.encode()),
        ],
        body,
    )


class InvocationRouter:
    """ASGI middleware that answers ``POST /endpoints/{name}/invocations`` itself.

    The invoke path is the hot path: taking it before Starlette's routing, request and response
    objects saves a noticeable share of the gateway's own time per invocation. Everything else
    goes on to the Starlette app.
    """

    def __init__(
        self, app: ASGIApp, invocations: InvocationsEndpoint, async_invocations: Invoker | None = None
    ) -> None:
        self.app = app
        self.invocations = invocations
        self.async_invocations = async_invocations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            invoker: Invoker | None = None
            if path.startswith(PREFIX) and path.endswith(SUFFIX):
                name, invoker = path[len(PREFIX) : -len(SUFFIX)], self.invocations
            elif path.startswith(PREFIX) and path.endswith(ASYNC_SUFFIX):
                name, invoker = path[len(PREFIX) : -len(ASYNC_SUFFIX)], self.async_invocations
            if invoker is not None:
                if name and "/" not in name:
                    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                    reply = await invoker.invoke(name, headers, receive)
                    # SageMaker's replies carry a Content-Length (clients read it); it also saves
                    # the chunked encoding's second write.
                    reply.headers.append((b"content-length", str(len(reply.body)).encode()))
                    await send(
                        {"type": "http.response.start", "status": reply.status, "headers": reply.headers}
                    )
                    await send({"type": "http.response.body", "body": reply.body})
                    return
        await self.app(scope, receive, send)


def check_custom_attributes(value: str | None) -> None:
    """At most 1,024 visible US-ASCII characters (and spaces), as InvokeEndpoint documents."""
    if value is None:
        return
    if len(value) > 1024:
        raise ValidationError(
            "1 validation error detected: Value at 'customAttributes' failed to satisfy constraint: "
            "Member must have length less than or equal to 1024"
        )
    if not all(" " <= c <= "~" or c == "\t" for c in value):
        raise ValidationError(
            "1 validation error detected: Value at 'customAttributes' failed to satisfy constraint: "
            "Member must consist of visible US-ASCII characters"
        )


def check_inference_id(value: str | None) -> None:
    """1 to 64 printable characters, not starting with a space, as InvokeEndpoint documents (data
    capture records it as eventMetadata.inferenceId)."""
    if value is None:
        return
    if not 1 <= len(value) <= 64:
        raise ValidationError(
            "1 validation error detected: Value at 'inferenceId' failed to satisfy constraint: "
            "Member must have length between 1 and 64"
        )
    if not _INFERENCE_ID.match(value):
        raise ValidationError(
            "1 validation error detected: Value at 'inferenceId' failed to satisfy constraint: "
            r"Member must satisfy regular expression pattern: \A\S[\p{Print}]*\z"
        )


class InvocationsEndpoint:
    def __init__(
        self,
        serving: Serving,
        control: ControlPlane,
        account: str,
        meter: Meter | None = None,
        capture: CaptureWriter | None = None,
    ) -> None:
        self.serving = serving
        self.control = control
        self.account = account
        self.meter = meter
        self.capture = capture

    async def invoke(self, name: str, headers: dict[str, str], receive: Receive) -> Reply:
        """One invocation; ``headers`` has lower-case names."""
        request_id = str(uuid.uuid4())
        received, started = time.time(), time.perf_counter()
        metered = _Metered()
        try:
            endpoint = self.serving.endpoint(name)
            if endpoint is None or endpoint.name != name:
                # Names are unique whatever their case, but an invocation must match the case the
                # endpoint was created with, as on SageMaker.
                raise await run_in_threadpool(self.control.refusal_for, name, self.account)
            metered.endpoint = name.lower()
            if endpoint.asynchronous is not None:
                raise ValidationError(
                    f"Endpoint {name} of account {self.account} is an asynchronous inference endpoint; "
                    "invoke it with InvokeEndpointAsync."
                )
            # The variant is chosen here rather than in serving so that every record, an error's
            # too, names the variant and memory size it was for.
            variant = endpoint.choose(headers.get("x-amzn-sagemaker-target-variant"))
            metered.variant, metered.memory_mb = variant.name, variant.memory_mb
            metered.serverless = variant.serverless
            limit = SERVERLESS_MAX_PAYLOAD if variant.serverless else PROVISIONED_MAX_PAYLOAD
            if declared_oversize(headers.get("content-length"), limit):
                raise _Oversize(request_id)
            check_custom_attributes(headers.get(CUSTOM_ATTRIBUTES))
            check_inference_id(headers.get(INFERENCE_ID))
            try:
                body = await read_body(receive, limit)
            except OversizeBody:
                raise _Oversize(request_id) from None
            metered.bytes_in = len(body)
            invocation = Invocation(
                endpoint=name,
                body=body,
                content_type=headers.get("content-type"),
                accept=headers.get("accept"),
                custom_attributes=headers.get(CUSTOM_ATTRIBUTES),
                target_variant=headers.get("x-amzn-sagemaker-target-variant"),
            )
            result = await self.serving.invoke(variant, invocation)
        except ColdbrewError as error:
            response = invocation_error(error, request_id)
            if isinstance(error, _Oversize):
                response.headers.append(CLOSE)
            self._record_error(metered, received, started, response, error)
            return response
        except Exception:
            log.exception("invocation %s of %s failed", request_id, name)
            response = invocation_error(
                InternalFailure(f"Internal error; request id {request_id}."), request_id
            )
            self._record_error(metered, received, started, response, InternalFailure(""))
            return response
        # The model's content type is passed through as is (no charset added).
        reply_headers = [
            (b"content-type", result.content_type.encode("latin-1")),
            (b"x-amzn-invoked-production-variant", result.variant.encode("latin-1")),
            (b"x-amzn-requestid", request_id.encode()),
        ]
        if result.custom_attributes is not None:
            reply_headers.append((CUSTOM_ATTRIBUTES.encode(), result.custom_attributes.encode("latin-1")))
        if endpoint.capture is not None and self.capture is not None:
            # Only appends to the writer's buffer: sampling, encoding and S3 are off this path.
            self.capture.offer(
                endpoint.capture,
                endpoint.name,
                result.variant,
                received,
                invocation.content_type or "application/octet-stream",
                body,
                result.content_type,
                result.body,
                headers.get(INFERENCE_ID),
            )
        if self.meter is not None:
            total_us = int((time.perf_counter() - started) * 1_000_000)
            self.meter.record(
                MeterRecord.answered(
                    endpoint=metered.endpoint,
                    variant=result.variant,
                    started_at=received,
                    total_us=total_us,
                    model_latency_us=result.model_latency_us,
                    cold_start=result.cold_start,
                    setup_ms=result.setup_ms,
                    memory_mb=metered.memory_mb,
                    serverless=metered.serverless,
                    bytes_in=metered.bytes_in,
                    bytes_out=len(result.body),
                    node=result.node,
                )
            )
        return Reply(200, reply_headers, result.body)

    def _record_error(
        self, metered: _Metered, received: float, started: float, response: Reply, error: ColdbrewError
    ) -> None:
        # Invocations of endpoints that do not exist are not metered: there is nothing to charge
        # them to, and arbitrary names would grow the metrics without bound.
        if self.meter is None or metered.endpoint is None:
            return
        self.meter.record(
            MeterRecord.failed(
                endpoint=metered.endpoint,
                variant=metered.variant,
                started_at=received,
                total_us=int((time.perf_counter() - started) * 1_000_000),
                memory_mb=metered.memory_mb,
                serverless=metered.serverless,
                bytes_in=metered.bytes_in,
                bytes_out=len(response.body),
                status=response.status,
                error_code=error.code,
                # A model's error on --backend ray names its node, as an answer does.
                node=error.node if isinstance(error, ModelError) else None,
            )
        )


class _Oversize(ValidationError):
    """SageMaker's refusal of a body over the payload limit, sent before the body was read to
    its end (so the connection is closed after it, not read on)."""

    def __init__(self, request_id: str) -> None:
        # SageMaker's own words, which clients match on; the limit is in the README.
        super().__init__(f"Request {request_id} has oversize body.")


class _Metered:
    """What is known about an invocation for its meter record, filled in as the request proceeds."""

    __slots__ = ("bytes_in", "endpoint", "memory_mb", "serverless", "variant")

    def __init__(self) -> None:
        self.endpoint: str | None = None
        self.variant = ""
        self.memory_mb = 0
        self.serverless = True
        self.bytes_in = 0
