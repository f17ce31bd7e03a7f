"""The control API: AWS JSON 1.1, ``POST /`` with ``X-Amz-Target: SageMaker.<Operation>``."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from coldbrew.control.service import ControlPlane, RequestContext
from coldbrew.control.validation import operation_model, validate_input
from coldbrew.errors import ColdbrewError, InternalFailure, SerializationException, UnknownOperationException
from coldbrew.wire.bodies import read_json_object
from coldbrew.wire.sigv4 import signed_region

log = logging.getLogger("coldbrew.gateway")

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "SageMaker."


def json_response(body: dict[str, Any], status: int = 200, request_id: str | None = None) -> Response:
    headers = {"x-amzn-RequestId": request_id or str(uuid.uuid4())}
    return Response(
        json.dumps(body, default=str), status_code=status, media_type=CONTENT_TYPE, headers=headers
    )


def error_response(error: ColdbrewError, request_id: str) -> Response:
    response = json_response(error.body(), error.status, request_id)
    response.headers["x-amzn-ErrorType"] = error.code
    return response


def _operation_name(request: Request) -> str:
    target = request.headers.get("x-amz-target")
    if not target:
        raise UnknownOperationException(
            "Missing X-Amz-Target header: send POST / with X-Amz-Target: SageMaker.<Operation>."
        )
    if not target.startswith(TARGET_PREFIX):
        raise UnknownOperationException(
            f"Unknown operation target '{target}': expected SageMaker.<Operation>."
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
                raise UnknownOperationException(f"Operation {name} is not a SageMaker operation.")
            if handler is None:
                raise UnknownOperationException(f"coldbrew does not implement SageMaker.{name}.")
            params = await read_json_object(request, SerializationException)
            validate_input(model, params)
            region = signed_region(request.headers.get("authorization")) or self.default_region
            context = RequestContext(region=region, account=self.account)
            result = await run_in_threadpool(handler, context, params)
        except ColdbrewError as error:
            return error_response(error, request_id)
        except Exception:
            log.exception("request %s failed", request_id)
            return error_response(InternalFailure(f"Internal error; request id {request_id}."), request_id)
        return json_response(result, request_id=request_id)
