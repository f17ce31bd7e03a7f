"""The SageMaker container contract: ``GET /ping`` and ``POST /invocations``, as plain calls.

:class:`WorkerApp` maps one parsed request to one response and never raises: every exception of
the handlers becomes an error response here, the single place where that translation happens.
It knows nothing of sockets (:mod:`coldbrew.worker.protocol` does), so it can run inline on the
event loop or in a thread of the predict pool.
"""

from __future__ import annotations

import json
import logging
import uuid

from coldbrew.worker import cores
from coldbrew.worker.context import Context
from coldbrew.worker.errors import describe
from coldbrew.worker.handlers import InferenceHandler

CONTENT_TYPE = b"content-type"
ACCEPT = b"accept"
CUSTOM_ATTRIBUTES = b"x-amzn-sagemaker-custom-attributes"
_OURS = frozenset(
    {"content-type", "content-length", "transfer-encoding", "connection", cores.HEADER.decode()}
)
"""Headers a handler may not set: the protocol's framing, and the figure the gateway schedules by."""
REQUEST_ID = b"x-amzn-requestid"

_JSON = b"application/json"

logger = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]


class Request:
    """One parsed HTTP request. Header names are lower-case; the last of a repeated header wins."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path")

    def __init__(
        self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes, keep_alive: bool
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class Response:
    """Status, headers (without Content-Length, which the protocol adds) and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes = b"") -> None:
        self.status = status
        self.headers = headers
        self.body = body


_PONG = Response(200, [(CONTENT_TYPE, _JSON)])


class WorkerApp:
    """Serves one loaded model."""

    def __init__(self, handler: InferenceHandler) -> None:
        self.handler = handler
        self.core_meter = cores.CoreMeter()

    def handle(self, request: Request) -> Response:
        path = request.path
        if path == b"/invocations":
            if request.method != b"POST":
                return error_response(405, "MethodNotAllowed: use POST /invocations")
            return self.invoke(request)
        if path == b"/ping":
            if request.method not in (b"GET", b"HEAD"):
                return error_response(405, "MethodNotAllowed: use GET /ping")
            # Served only once the model is loaded, so answering at all means healthy.
            return _PONG
        return error_response(
            404, f"NotFound: no route {path.decode('latin-1')}; the worker serves /ping and /invocations"
        )

    def invoke(self, request: Request) -> Response:
        headers = request.headers
        content_type = _text(headers.get(CONTENT_TYPE))
        accept = _text(headers.get(ACCEPT))
        context = Context(
            self.handler.model_dir,
            request_id=_text(headers.get(REQUEST_ID)) or uuid.uuid4().hex,
            custom_attributes=_text(headers.get(CUSTOM_ATTRIBUTES)),
            content_type=content_type,
            accept=accept,
            headers=headers,
        )
        started = self.core_meter.start()
        try:
            body, result_type = self.handler.invoke(request.body, content_type, accept, context)
        except Exception as exc:
            status, message = describe(exc)
            if status >= 500:
                logger.error("request %s failed: %s", context.request_id, message, exc_info=exc)
            else:
                logger.warning("request %s rejected with %d: %s", context.request_id, status, message)
            return error_response(status, message)
        processor = context.request_processor[0]
        # What a handler set through the model server's calls (set_response_content_type,
        # set_response_header, set_http_response_status) wins, as in SageMaker's containers.
        set_headers = processor.response_headers
        result_type = set_headers.get("content-type", result_type)
        response_headers = [
            (CONTENT_TYPE, result_type.encode("latin-1")),
            (cores.HEADER, cores.header_value(self.core_meter.cores(started))),
        ]
        if context.response_custom_attributes is not None:
            response_headers.append((CUSTOM_ATTRIBUTES, context.response_custom_attributes.encode("latin-1")))
        for name, value in set_headers.items():
            if name in _OURS or "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                continue  # the protocol owns framing; a line break would forge a header
            response_headers.append((name.encode("latin-1", "replace"), value.encode("latin-1", "replace")))
        status = processor.status_code if 200 <= processor.status_code <= 599 else 500
        return Response(status, response_headers, body)


def error_response(status: int, message: str) -> Response:
    """The worker's error shape: ``{"message": "<ExceptionClass>: <message>"}``, never a traceback."""
    return Response(status, [(CONTENT_TYPE, _JSON)], json.dumps({"message": message}).encode())


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
