"""The control API: AWS JSON 1.1, ``POST /`` with ``X-Amz-Target: SageMaker.<Operation>``.

A request body is read at most :data:`MAX_REQUEST_BYTES` (more is refused as it arrives), then
parsed, validated and handled in one trip to a worker thread: the event loop, which carries every
invocation, never parses or checks a multi-megabyte document itself, and a small request costs no
more than the one hop its handler always took.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from typing import Any

from botocore.model import OperationModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from coldbrew.control.service import ControlPlane, Operation, RequestContext
from coldbrew.control.validation import operation_model, validate_input
from coldbrew.errors import ColdbrewError, InternalFailure, SerializationException, UnknownOperationException
from coldbrew.wire.bodies import CLOSE, OversizeBody, parse_json_object, read_request_body, too_large
from coldbrew.wire.constraints import shown
from coldbrew.wire.sigv4 import signed_region

log = logging.getLogger("coldbrew.gateway")

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "SageMaker."
MAX_REQUEST_BYTES = 8 * 1024 * 1024
"""Largest control request body read. SageMaker's largest documented members are a few hundred
KB (a model's 16 Environment entries of up to 1,024 characters each, 50 tags, a pipeline
definition of 1 MB), so a body past this is not a SageMaker request."""


def json_response(body: dict[str, Any], status: int = 200, request_id: str | None = None) -> Response:
    headers = {"x-amzn-RequestId": request_id or str(uuid.uuid4())}
    try:
        text = json.dumps(body, default=str, allow_nan=False)
    except ValueError:
        # A NaN or Infinity stored before requests were checked for them: null is valid JSON.
        text = json.dumps(_finite(body), default=str)
    return Response(text, status_code=status, media_type=CONTENT_TYPE, headers=headers)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def error_response(error: ColdbrewError, request_id: str, close: bool = False) -> Response:
    response = json_response(error.body(), error.status, request_id)
    response.headers["x-amzn-ErrorType"] = error.code
    if close:
        response.headers[CLOSE[0].decode()] = CLOSE[1].decode()
    return response


def _operation_name(request: Request) -> str:
    target = request.headers.get("x-amz-target")
    if not target:
        raise UnknownOperationException(
            "Missing X-Amz-Target header: send POST / with X-Amz-Target: SageMaker.<Operation>."
        )
    if not target.startswith(TARGET_PREFIX):
        raise UnknownOperationException(
            f"Unknown operation target '{shown(target)}': expected SageMaker.<Operation>."
        )
    return target[len(TARGET_PREFIX) :]


class ControlEndpoint:
    """The ASGI handler for ``POST /``: parse, validate, dispatch to the control plane."""

    def __init__(self, control: ControlPlane, account: str, default_region: str) -> None:
        self.control = control
        self.account = account
        self.default_region = default_region

    async def handle(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            name = _operation_name(request)
            handler = self.control.operations.get(name)
            model = operation_model(name)
            if model is None:
                raise UnknownOperationException(f"Operation {shown(name)} is not a SageMaker operation.")
            if handler is None:
                raise UnknownOperationException(f"coldbrew does not implement SageMaker.{name}.")
            try:
                raw = await read_request_body(request, MAX_REQUEST_BYTES)
            except OversizeBody:
                error = SerializationException(too_large(MAX_REQUEST_BYTES))
                return error_response(error, request_id, close=True)
            region = signed_region(request.headers.get("authorization")) or self.default_region
            context = RequestContext(region=region, account=self.account)
            result = await run_in_threadpool(_run, model, handler, context, raw)
        except ColdbrewError as error:
            return error_response(error, request_id)
        except Exception:
            log.exception("request %s failed", request_id)
            return error_response(InternalFailure(f"Internal error; request id {request_id}."), request_id)
        return json_response(result, request_id=request_id)


def _run(model: OperationModel, handler: Operation, context: RequestContext, raw: bytes) -> dict[str, Any]:
    params = parse_json_object(raw, SerializationException)
    validate_input(model, params)
    return handler(context, params)
