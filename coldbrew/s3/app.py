"""The embedded S3 as an ASGI app: S3's REST API, routed by method, bucket, key and subresource.

Every failure becomes S3's XML error in one place (:meth:`S3App.__call__`): an :class:`S3Error`
with its own code and status, anything else a logged InternalError. Authentication happens in
front of this app (:mod:`coldbrew.gateway.auth_gate`): a request that reaches it is signed by a
key allowed to make it, or auth is off.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable, Iterable

from starlette.types import Receive, Scope, Send

from . import bucket_api, multipart_api, object_api
from .body import ClientGone
from .errors import AccessDenied, InternalError, MethodNotAllowed, NotImplementedError_, NotModified, S3Error
from .http import Context, Request, Responder, parse_request
from .multipart import Uploads
from .store import S3Store
from .xmlio import error_document

log = logging.getLogger("coldbrew.s3")

Handler = Callable[[Context, Request, Responder], Awaitable[None]]

# Subresources S3 has and this store does not: refused as S3 refuses what it does not implement.
_UNSUPPORTED = {
    "accelerate", "acl", "analytics", "attributes", "cors", "encryption", "intelligent-tiering", "inventory",
    "legal-hold", "lifecycle", "logging", "metrics", "notification", "object-lock", "ownershipControls",
    "policy", "policyStatus", "publicAccessBlock", "replication", "requestPayment", "restore", "retention",
    "select", "session", "tagging", "torrent", "versions", "website",
}  # fmt: skip


def route(request: Request) -> Handler:
    method, query = request.method, request.query
    unsupported = _UNSUPPORTED.intersection(query)
    if unsupported:
        raise NotImplementedError_(f"coldbrew's S3 does not support ?{min(unsupported)}.")
    if request.bucket is None:
        if method in ("GET", "HEAD"):
            return bucket_api.list_buckets
        raise MethodNotAllowed(Method=method, ResourceType="SERVICE")
    if request.key is None:
        return _bucket_handler(method, query)
    return _object_handler(method, query)


def _bucket_handler(method: str, query: dict[str, str]) -> Handler:
    if method == "GET":
        if "location" in query:
            return bucket_api.get_bucket_location
        if "versioning" in query:
            return bucket_api.get_bucket_versioning
        if "uploads" in query:
            return multipart_api.list_uploads
        return bucket_api.list_objects
    if method == "PUT" and "versioning" in query:
        raise NotImplementedError_("coldbrew's S3 keeps one version of each object.")
    if method == "POST" and "delete" in query:
        return bucket_api.delete_objects
    handlers: dict[str, Handler] = {
        "PUT": bucket_api.create_bucket,
        "HEAD": bucket_api.head_bucket,
        "DELETE": bucket_api.delete_bucket,
    }
    if method in handlers:
        return handlers[method]
    raise MethodNotAllowed(Method=method, ResourceType="BUCKET")


def _object_handler(method: str, query: dict[str, str]) -> Handler:
    upload = "uploadId" in query
    if method == "PUT":
        return multipart_api.upload_part if upload else object_api.put_object
    if method in ("GET", "HEAD"):
        return multipart_api.list_parts if upload and method == "GET" else object_api.get_object
    if method == "DELETE":
        return multipart_api.abort if upload else object_api.delete_object
    if method == "POST":
        if "uploads" in query:
            return multipart_api.create
        if upload:
            return multipart_api.complete
    raise MethodNotAllowed(Method=method, ResourceType="OBJECT")


class S3App:
    """ASGI app of the embedded S3. ``hosts`` are the server's own host names, for virtual-hosted
    style requests (``bucket.localhost:8080``)."""

    def __init__(self, store: S3Store, account_id: str, region: str, hosts: Iterable[str]) -> None:
        self.context = Context(store, Uploads(store), account_id, region)
        self.hosts = sorted({h.lower() for h in hosts if h}, key=len, reverse=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = parse_request(scope, receive, self.hosts)
        response = Responder(send, request)
        try:
            _check_owner(self.context, request)
            await route(request)(self.context, request, response)
        except ClientGone:
            log.debug("s3 %s %s: the client went away", request.method, request.resource)
        except S3Error as error:
            await self._error(error, request, response)
        except Exception as error:
            log.exception("s3 %s %s failed", request.method, request.resource)
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                message = "coldbrew's S3 store has no space left on its disk (the data dir's s3/)."
            else:
                message = f"coldbrew's S3 failed: {type(error).__name__}; see the server's log."
            await self._error(InternalError(message), request, response)

    async def _error(self, error: S3Error, request: Request, response: Responder) -> None:
        if response.started:  # the status line is gone; all we can do is cut the body short
            log.warning(
                "s3 %s %s: %s after the response started", request.method, request.resource, error.code
            )
            raise error
        if isinstance(error, NotModified):
            await response.send(304)
            return
        body = b"" if request.method == "HEAD" else error_document(error, request.id, request.resource)
        headers = [(b"content-type", b"application/xml")]
        if request.has_unread_body:
            # Refused before its body was read: a client waiting on Expect: 100-continue never sends
            # it, so the connection's next bytes would not be a request. Close it instead.
            headers.append((b"connection", b"close"))
        if error.code == "InvalidRange" and "ActualObjectSize" in error.fields:
            headers.append((b"content-range", f"bytes */{error.fields['ActualObjectSize']}".encode()))
        await response.send(error.status, body, headers)


def _check_owner(context: Context, request: Request) -> None:
    # The SageMaker SDK checks its default bucket is its own this way.
    for header in ("x-amz-expected-bucket-owner", "x-amz-source-expected-bucket-owner"):
        owner = request.header(header)
        if owner is not None and owner != context.account_id:
            raise AccessDenied()
