"""The CloudWatch API as an ASGI app: read the body (bounded), decode, run, encode, in one place.

Every error a request can cause is answered in its protocol's error shape: CloudWatch's codes for
bad input (400) and an InternalServiceError (500) only for a bug in coldbrew, logged with its
traceback. Operations run in a thread (SQLite), each on that thread's own read-only connection.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from coldbrew.cloudwatch.errors import CloudWatchError, InternalServiceError, RequestTooLarge
from coldbrew.cloudwatch.operations import OPERATIONS
from coldbrew.cloudwatch.protocols import Headers, Protocol, decode, encode, encode_error, protocol_of
from coldbrew.cloudwatch.shapes import coerce, operation
from coldbrew.wire.bodies import OversizeBody, read_body

log = logging.getLogger("coldbrew.cloudwatch")

MAX_BODY_BYTES = 1024 * 1024
"""CloudWatch's request size limit (1 MB); a read request needs far less."""


class CloudWatchApp:
    def __init__(
        self,
        db_path: Path,
        flush: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db_path = db_path
        self.flush = flush
        """Called before each operation: what was invoked before the request is in the store."""
        self.clock = clock
        self._local = threading.local()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        request_id = str(uuid.uuid4())
        headers = dict(scope["headers"])
        protocol = protocol_of(scope["method"], scope["path"], headers)
        try:
            try:
                body = await read_body(receive, MAX_BODY_BYTES)
            except OversizeBody:
                raise RequestTooLarge(
                    f"The request is larger than CloudWatch's limit of {MAX_BODY_BYTES:,} bytes."
                ) from None
            query = scope.get("query_string", b"").decode("latin-1")
            request = decode(protocol, scope["path"], query, body, headers)
            status, out_headers, payload = await run_in_threadpool(self._run, request, request_id)
        except CloudWatchError as error:
            status, out_headers, payload = encode_error(protocol, error, request_id)
        except Exception:
            log.exception("CloudWatch request %s failed", request_id)
            bug = InternalServiceError(f"coldbrew failed to answer request {request_id}; see its log.")
            status, out_headers, payload = encode_error(protocol, bug, request_id)
        out_headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": out_headers})
        await send({"type": "http.response.body", "body": payload})

    def _run(self, request: Any, request_id: str) -> tuple[int, Headers, bytes]:
        model = operation(request.operation)
        assert model is not None
        params = coerce(request.document, model.input_shape)
        if self.flush is not None:
            self.flush()
        result = OPERATIONS[request.operation](self._connection(), params, self.clock())
        return encode(request.protocol, request.operation, result, request_id)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
        return conn


__all__ = ["CloudWatchApp", "Protocol"]
