"""The CloudWatch Logs API: AWS JSON 1.1, ``POST /`` with ``X-Amz-Target: Logs_20140328.<Op>``.

Served on the gateway's port for requests signed for ``logs`` (or, unsigned, by their target; see
:mod:`coldbrew.gateway.service_router`). Requests are checked against botocore's own model of the
service (required members, lengths, ranges, enums, patterns), as the control API checks
SageMaker's, and every refusal is CloudWatch Logs' own error: ``InvalidParameterException`` for a
request that breaks the API's rules, ``ResourceNotFoundException`` for a group or stream that does
not exist, ``InvalidOperationException`` for an operation coldbrew does not serve; never a 5xx for
anything a client sends. Reads run in a thread on a read-only connection, after the collector has
written what it holds (:meth:`~coldbrew.logs.collector.LogCollector.sync`).
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.session
from botocore.model import OperationModel, ServiceModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from coldbrew.logs import query, store
from coldbrew.logs.collector import LogCollector
from coldbrew.logs.errors import (
    InvalidOperationException,
    InvalidParameterException,
    LogsError,
    SerializationException,
    ServiceUnavailableException,
)
from coldbrew.wire.bodies import OversizeBody, parse_json_object, read_request_body, too_large
from coldbrew.wire.constraints import params_error, shown
from coldbrew.wire.sigv4 import signed_region

log = logging.getLogger("coldbrew.logs")

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "Logs_20140328."
MAX_BODY_BYTES = 1 << 20

Operation = Callable[[Any, dict[str, Any], query.Caller], dict[str, Any]]
OPERATIONS: dict[str, Operation] = {
    "DescribeLogGroups": query.describe_log_groups,
    "DescribeLogStreams": query.describe_log_streams,
    "GetLogEvents": query.get_log_events,
    "FilterLogEvents": query.filter_log_events,
}


@functools.cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("logs")


def validate(operation: OperationModel, params: dict[str, Any]) -> None:
    shape = operation.input_shape
    if shape is None:
        return
    problem = params_error(params, shape)
    if problem is not None:
        raise InvalidParameterException(problem)


class LogsApi:
    """The ASGI app for the Logs API."""

    def __init__(
        self, collector: LogCollector, account: str, default_region: str, retention_days: float
    ) -> None:
        self.collector = collector
        self.db_path: Path = collector.db_path
        self.account = account
        self.default_region = default_region
        self.retention_days = retention_days

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handle(Request(scope, receive))
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            name = _operation_name(request)
            try:
                raw = await read_request_body(request, MAX_BODY_BYTES)
            except OversizeBody:
                response = _error(SerializationException(too_large(MAX_BODY_BYTES)), request_id)
                response.headers["connection"] = "close"  # the rest of the body is not read
                return response
            model = service_model()
            if name not in model.operation_names:
                raise _Unknown(f"Operation {shown(name)} is not a CloudWatch Logs operation.")
            operation = OPERATIONS.get(name)
            if operation is None:
                served = ", ".join(OPERATIONS)
                raise InvalidOperationException(
                    f"coldbrew does not serve Logs_20140328.{name}; it serves {served}."
                )
            region = signed_region(request.headers.get("authorization")) or self.default_region
            caller = query.Caller(region, self.account, self.retention_days)
            # Parsed and checked in the same thread as the read: never on the event loop.
            result = await run_in_threadpool(self._read, model.operation_model(name), operation, raw, caller)
        except LogsError as error:
            return _error(error, request_id)
        except Exception:
            log.exception("logs request %s failed", request_id)
            return _error(
                ServiceUnavailableException(f"Internal error; request id {request_id}."), request_id
            )
        return _json(result, 200, request_id)

    def _read(
        self, model: OperationModel, operation: Operation, raw: bytes, caller: query.Caller
    ) -> dict[str, Any]:
        params = parse_json_object(raw, SerializationException)
        validate(model, params)
        self.collector.sync()
        conn = store.connect(self.db_path, readonly=True)
        try:
            return operation(conn, params, caller)
        finally:
            conn.close()


class _Unknown(LogsError):
    code = "UnknownOperationException"


def _operation_name(request: Request) -> str:
    target = request.headers.get("x-amz-target", "")
    if not target.startswith(TARGET_PREFIX):
        raise _Unknown(f"Unknown operation target '{shown(target)}': expected {TARGET_PREFIX}<Operation>.")
    return target[len(TARGET_PREFIX) :]


def _json(body: dict[str, Any], status: int, request_id: str) -> Response:
    return Response(
        json.dumps(body),
        status_code=status,
        media_type=CONTENT_TYPE,
        headers={"x-amzn-RequestId": request_id},
    )


def _error(error: LogsError, request_id: str) -> Response:
    response = _json(error.body(), error.status, request_id)
    response.headers["x-amzn-ErrorType"] = error.code
    return response
