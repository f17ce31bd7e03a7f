"""The CloudFormation API as an ASGI app on the gateway's port (requests signed for
``cloudformation``): read the body (bounded), decode, run the operation in a thread, encode.

An operation that starts a stack operation (CreateStack, UpdateStack, DeleteStack,
ExecuteChangeSet) launches it on the engine and answers once it has finished or after
``hold_s`` seconds, whichever is first: the AWS CLI's ``deploy`` then finds the stack complete at
its first DescribeStacks instead of sleeping 30 s before its next.
"""

from __future__ import annotations

import logging
import uuid

from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from coldbrew.stacks.engine import StackEngine
from coldbrew.stacks.errors import InternalFailure, RequestTooLarge, StackError
from coldbrew.stacks.service import Caller, Reply, StackService
from coldbrew.stacks.wire import decode, encode, encode_error
from coldbrew.wire.bodies import OversizeBody, read_body
from coldbrew.wire.sigv4 import signed_region

log = logging.getLogger("coldbrew.stacks")

MAX_BODY_BYTES = 1024 * 1024
"""A 51,200-byte template, form-encoded, with parameters and tags, is far less."""
HOLD_S = 20.0


class CloudFormationApp:
    def __init__(
        self, service: StackService, engine: StackEngine, default_region: str, hold_s: float = HOLD_S
    ) -> None:
        self.service = service
        self.engine = engine
        self.default_region = default_region
        self.hold_s = hold_s
        self.served = frozenset(service.operations)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        request_id = str(uuid.uuid4())
        headers = dict(scope["headers"])
        try:
            try:
                body = await read_body(receive, MAX_BODY_BYTES)
            except OversizeBody:
                raise RequestTooLarge(f"The request is larger than {MAX_BODY_BYTES:,} bytes.") from None
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            region = signed_region(authorization) or self.default_region
            caller = Caller(region, self.service.account)
            query = scope.get("query_string", b"").decode("latin-1")
            action, reply = await run_in_threadpool(self._run, body, query, caller)
            if reply.run is not None:
                self.engine.launch(reply.run)
                await self.engine.settle(reply.run, self.hold_s)
            status, payload = 200, encode(action, reply.body, request_id)
        except StackError as error:
            status, payload = error.status, encode_error(error, request_id)
        except Exception:
            log.exception("CloudFormation request %s failed", request_id)
            bug = InternalFailure(f"coldbrew failed to answer request {request_id}; see its log.")
            status, payload = bug.status, encode_error(bug, request_id)
        out_headers = [
            (b"content-type", b"text/xml"),
            (b"x-amzn-requestid", request_id.encode()),
            (b"content-length", str(len(payload)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": out_headers})
        await send({"type": "http.response.body", "body": payload})

    def _run(self, body: bytes, query: str, caller: Caller) -> tuple[str, Reply]:
        request = decode(body, query, self.served)
        return request.action, self.service.operations[request.action](caller, request.params)


__all__ = ["CloudFormationApp"]
