"""The ASGI middleware in front of every route on the port: Host check, then (when auth is on)
signature, then the key's policy.

Order, for one request:

1. **Host** (always, auth on or off): a Host header that is not a loopback name, an IP address,
   the machine's name or an ``--allowed-host`` (or a subdomain of one, for virtual-hosted S3) is
   refused, so a web page cannot reach the API through DNS rebinding.
2. **Who signed it**: SigV4 from the Authorization header or a presigned URL's query, S3's SigV2
   (header or presigned: real S3 still takes them and boto3 presigns S3 URLs with SigV2 by
   default), or HTTP Basic with the key id and secret for the gateway's plain routes only
   (``/metrics`` and ``/ui``: Prometheus scrapers and browsers cannot sign). The key must exist;
   the date must be within 15 minutes of the server's clock, a presigned URL not past its expiry.
3. **The signature**, recomputed with botocore's canonicalisation (:mod:`.signature`). SigV4 signs
   the body's hash: S3 sends it in ``x-amz-content-sha256``, so an S3 request is verified before
   its body is read and the body is checked as it streams (a mismatch ends the upload before the
   store keeps it); the other services' bodies (at most a few MB: invocations, control calls) are
   read first, hashed, verified, then handed on.
4. **The policy**: each permission the request needs (:mod:`.actions`) must be allowed by the key's
   policy and not denied.

``/ping`` needs no credentials (a health check says nothing). Failures are answered in the
request's own protocol with AWS's codes (:mod:`coldbrew.gateway.auth_responses`).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coldbrew.auth.actions import Need, RequestFacts, needs_for
from coldbrew.auth.chunked import BodyCheck, ChunkSignatures, HashCheck
from coldbrew.auth.errors import (
    AccessDenied,
    AuthError,
    BodyTooLargeToVerify,
    HostNotAllowed,
    IncompleteSignature,
    MissingAuthentication,
    MissingContentSha256,
    PayloadHashMismatch,
    PresignedUrlExpired,
    RequestTimeTooSkewed,
    SignatureMismatch,
    UnknownAccessKey,
)
from coldbrew.auth.internal import internal_key
from coldbrew.auth.keys import AccessKey, KeyRing
from coldbrew.auth.policy import Decision
from coldbrew.auth.signature import (
    EMPTY_SHA256_HASH,
    SigningKeys,
    same,
    sign,
    sigv2_expected,
    sigv4_string_to_sign,
)
from coldbrew.gateway.auth_responses import Wire, send_error, wire_of
from coldbrew.gateway.service_router import S3, SAGEMAKER, service_of
from coldbrew.s3.http import server_hosts, virtual_host_bucket
from coldbrew.settings import Settings
from coldbrew.wire.sigv4 import (
    SignatureFormatError,
    SigV2Claim,
    SigV4Claim,
    decode_query,
    http_date_epoch,
    parse_authorization,
    parse_presigned,
    parse_sigv2_header,
    parse_sigv2_query,
)

log = logging.getLogger("coldbrew.auth")

MAX_SKEW_S = 15 * 60
MAX_VERIFIED_BODY = 8 * 1024 * 1024
"""Largest non-S3 body read to check its signature: above the biggest any coldbrew API takes
(6 MB invocations). S3 bodies are checked as they stream, at any size."""
_PARSE_OFF_LOOP = 256 * 1024
_UNSIGNED = ("UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
_SIGNED_STREAMING = ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")


class HostCheck:
    """Which Host headers the server answers to (DNS-rebinding protection)."""

    def __init__(self, allowed: Iterable[str], bind_host: str) -> None:
        names = {a.strip().lower().rstrip(".") for a in allowed if a.strip()}
        self.any = "*" in names
        names.discard("*")
        names.add(socket.gethostname().lower())  # no DNS lookup: the name this machine calls itself
        if bind_host and not _is_ip(bind_host):
            names.add(bind_host.lower())
        self.names = frozenset(n for n in names if n)
        self._answers: dict[str, bool] = {}
        """Host headers already decided: every request asks, nearly always with the same one or two
        (parsing an IP literal was 3% of the gateway's busy time per invocation)."""

    def allows(self, host: str) -> bool:
        if self.any or not host:
            return True
        answer = self._answers.get(host)
        if answer is None:
            answer = self._decide(host)
            # Bounded in count and size: a client picks the headers it sends. Once full, hosts not
            # kept are decided each time, as they all were before.
            if len(self._answers) < _HOST_ANSWERS and len(host) <= _HOST_LENGTH:
                self._answers[host] = answer
        return answer

    def _decide(self, host: str) -> bool:
        name = host.strip().lower()
        if name.startswith("["):  # [v6]:port
            name = name[1 : name.find("]")] if "]" in name else name
        elif name.count(":") == 1:
            name = name.rsplit(":", 1)[0]
        name = name.rstrip(".")
        # A rebinding page reaches us under a name it controls: an IP literal in Host never is one.
        if _is_ip(name) or name == "localhost" or name.endswith(".localhost"):
            return True
        return any(name == n or name.endswith("." + n) for n in self.names)


_HOST_ANSWERS = 256
"""Host headers whose answer ``HostCheck`` keeps (the first ones seen: a server is asked under a
handful of names)."""
_HOST_LENGTH = 261
"""The longest Host kept: a DNS name (253) with a port."""


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class AuthConfig:
    enabled: bool
    account_id: str
    default_region: str
    allowed_hosts: tuple[str, ...] = ()
    bind_host: str = "127.0.0.1"
    s3_hosts: tuple[str, ...] = ()
    """The server's own names as bases of virtual-hosted bucket addresses (``bucket.localhost``)."""
    max_body_bytes: int = MAX_VERIFIED_BODY


@dataclass
class _Verified:
    key: AccessKey
    region: str
    body: bytes | None = None  # a body read here, handed on to the app
    check: BodyCheck | None = None  # an S3 body checked as it streams
    body_unread: bool = False


@dataclass
class _Request:
    """What the gate reads off an ASGI scope once."""

    method: str
    path: str
    raw_path: str
    raw_query: str
    headers: list[tuple[str, str]]
    header: dict[str, str]
    raw_headers: dict[bytes, bytes]
    service: str | None
    wire: Wire
    query: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, scope: Scope) -> _Request:
        raw_headers = dict(scope["headers"])
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        header: dict[str, str] = {}
        for name, value in headers:
            header[name] = f"{header[name]},{value}" if name in header else value
        raw_query = scope.get("query_string", b"").decode("latin-1")
        raw_path_bytes = scope.get("raw_path")
        raw_path = raw_path_bytes.decode("latin-1") if raw_path_bytes else quote(scope["path"], safe="/~")
        raw_path = raw_path.split("?", 1)[0]
        service = service_of(scope["method"], scope["path"], raw_query, raw_headers)
        wire = wire_of(service, scope["method"], scope["path"], raw_headers)
        return cls(
            scope["method"], scope["path"], raw_path, raw_query, headers, header, raw_headers, service, wire,
            decode_query(raw_query),
        )  # fmt: skip

    @property
    def has_body(self) -> bool:
        return self.header.get("content-length", "0") != "0" or "transfer-encoding" in self.header


class AuthGate:
    def __init__(
        self, app: ASGIApp, config: AuthConfig, keys: KeyRing | None, clock: Callable[[], float] = time.time
    ) -> None:
        if config.enabled and keys is None:
            raise ValueError("auth is on but there is no key ring")
        self.app, self.config, self.keys, self.clock = app, config, keys, clock
        self.hosts = HostCheck(config.allowed_hosts, config.bind_host)
        self.signing_keys = SigningKeys()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if not self.hosts.allows(host):
            request = _Request.of(scope)
            error = HostNotAllowed(
                f"Host '{host[:100]}' is not a name this coldbrew server answers to (a DNS-rebinding "
                f"guard). If clients reach it by that name, start it with --allowed-host "
                f"{_bare(host)[:100]} (COLDBREW_ALLOWED_HOSTS)."
            )
            await send_error(send, error, request.wire, request.path, close=request.has_body)
            return
        if not self.config.enabled:
            await self.app(scope, receive, send)
            return
        request = _Request.of(scope)
        if request.path == "/ping" and request.service in (None, SAGEMAKER):
            # The gateway's health check says nothing; the same path signed for S3 is bucket
            # "ping" and is checked like any other S3 request.
            await self.app(scope, receive, send)
            return
        try:
            verified = await self._authenticate(request, receive)
        except AuthError as error:
            if not isinstance(error, AccessDenied):
                log.info("refused %s %s: %s", request.method, request.path[:200], error.code)
            await send_error(send, error, request.wire, request.path, close=request.has_body)
            return
        if verified is None:
            return  # the client went away while its body was read
        if verified.check is not None:
            await self._streamed(scope, receive, send, verified.check, request)
        elif verified.body is not None:
            await self.app(scope, _replay(verified.body, receive), send)
        else:
            await self.app(scope, receive, send)

    async def _streamed(
        self, scope: Scope, receive: Receive, send: Send, check: BodyCheck, request: _Request
    ) -> None:
        """The app reads an S3 body that is checked as it arrives. On a mismatch the app is told
        the client went away (so the store keeps nothing) and the client gets the error."""
        failure: list[AuthError] = []
        started = False

        async def checked_receive() -> Message:
            if failure:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                try:
                    check.feed(message.get("body", b""))
                    if not message.get("more_body", False):
                        check.finish()
                except AuthError as error:
                    failure.append(error)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if failure and not started:
                return  # our error goes instead of whatever the app says about a "gone" client
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, checked_receive, guarded_send)
        if failure and not started:
            log.info("refused %s %s: %s", request.method, request.path[:200], failure[0].code)
            await send_error(send, failure[0], request.wire, request.path, close=True)

    async def _authenticate(self, request: _Request, receive: Receive) -> _Verified | None:
        assert self.keys is not None
        authorization = request.header.get("authorization", "")
        query = dict(request.query)
        try:
            if authorization.startswith("AWS4-HMAC-SHA256"):
                return await self._sigv4(request, parse_authorization(authorization, request.header), receive)
            if "X-Amz-Credential" in query:
                return await self._sigv4(request, parse_presigned(query), receive)
            if authorization.startswith("AWS ") and request.service == S3:
                return self._sigv2(request, parse_sigv2_header(authorization, request.header))
            if "AWSAccessKeyId" in query and "Signature" in query and request.service == S3:
                return self._sigv2(request, parse_sigv2_query(query))
        except SignatureFormatError as exc:
            raise IncompleteSignature(str(exc)) from None
        if authorization.startswith("Basic ") and request.wire is Wire.PLAIN:
            return self._basic(request, authorization)
        raise MissingAuthentication(
            "Missing Authentication Token: this coldbrew server requires requests signed with an "
            "access key (SigV4); create one with 'coldbrew keys create' and set AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY."
        )

    def _key(self, key_id: str) -> AccessKey:
        assert self.keys is not None
        key = self.keys.get(key_id)
        if key is None:
            raise UnknownAccessKey(
                f"The access key ID '{key_id[:40]}' does not exist in this coldbrew server's records "
                "(see 'coldbrew keys list').",
                AWSAccessKeyId=key_id[:40],
            )
        return key

    def _check_time(self, claim: SigV4Claim) -> None:
        now = self.clock()
        signed_at = claim.epoch
        stamp = _stamp
        if claim.presigned:
            expires = claim.expires_s if claim.expires_s is not None else MAX_SKEW_S
            if now > signed_at + expires:
                raise PresignedUrlExpired(
                    "Request has expired",
                    **{
                        "X-Amz-Expires": str(expires),
                        "Expires": _iso(signed_at + expires),
                        "ServerTime": _iso(now),
                    },
                )
        elif signed_at < now - MAX_SKEW_S:  # a presigned URL may be older: its expiry decides
            raise RequestTimeTooSkewed(
                f"Signature expired: {claim.timestamp} is now earlier than {stamp(now - MAX_SKEW_S)} "
                f"({stamp(now)} - 15 min.)",
                RequestTime=claim.timestamp,
                ServerTime=_iso(now),
                MaxAllowedSkewMilliseconds="900000",
            )
        if signed_at > now + MAX_SKEW_S:
            raise RequestTimeTooSkewed(
                f"Signature not yet current: {claim.timestamp} is still later than "
                f"{stamp(now + MAX_SKEW_S)} ({stamp(now)} + 15 min.)",
                RequestTime=claim.timestamp,
                ServerTime=_iso(now),
                MaxAllowedSkewMilliseconds="900000",
            )

    async def _sigv4(self, request: _Request, claim: SigV4Claim, receive: Receive) -> _Verified | None:
        key = self._key(claim.access_key_id)
        if claim.timestamp[:8] != claim.date:
            raise IncompleteSignature(
                f"Date in Credential scope ({claim.date}) does not match YYYYMMDD from the request's "
                f"date ({claim.timestamp})."
            )
        self._check_time(claim)
        query = (
            [(n, v) for n, v in request.query if n != "X-Amz-Signature"] if claim.presigned else request.query
        )
        signed_sha = request.header.get("x-amz-content-sha256")
        body: bytes | None = None
        check: BodyCheck | None = None
        if request.service == S3:
            payload_hash = signed_sha or ("UNSIGNED-PAYLOAD" if claim.presigned else None)
            if payload_hash is None:
                raise MissingContentSha256("Missing required header for this request: x-amz-content-sha256")
            if _is_sha256(payload_hash):
                check = HashCheck(payload_hash)
            elif payload_hash not in _UNSIGNED and payload_hash not in _SIGNED_STREAMING:
                raise IncompleteSignature(
                    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
                    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER), or a valid sha256 value."
                )
        elif request.has_body:
            body = await self._read_body(receive)
            if body is None:
                return None
            payload_hash = hashlib.sha256(body).hexdigest()
            if signed_sha is not None and _is_sha256(signed_sha) and signed_sha.lower() != payload_hash:
                raise PayloadHashMismatch(
                    "The provided 'x-amz-content-sha256' header does not match the body."
                )
        else:
            payload_hash = EMPTY_SHA256_HASH
        to_sign = sigv4_string_to_sign(
            claim, request.method, request.raw_path, query, request.headers, payload_hash
        )
        assert self.keys is not None
        signing_key = self.signing_keys.get(
            key, claim.date, claim.region, claim.service, self.keys.generation
        )
        if not same(sign(signing_key, to_sign.text), claim.signature):
            raise SignatureMismatch(
                "The request signature we calculated does not match the signature you provided. Check "
                "your AWS Secret Access Key and signing method. Consult the service documentation for "
                "details.",
                AWSAccessKeyId=key.access_key_id,
                StringToSign=to_sign.text[:4096],
                SignatureProvided=claim.signature[:128],
                CanonicalRequest=to_sign.canonical_request[:8192],
            )
        if payload_hash in _SIGNED_STREAMING:
            check = ChunkSignatures(
                signing_key, claim.timestamp, claim.scope, claim.signature, payload_hash.endswith("-TRAILER")
            )
        await self._authorize(request, key, claim.region, body)
        return _Verified(key, claim.region, body=body, check=check)

    def _sigv2(self, request: _Request, claim: SigV2Claim) -> _Verified:
        key = self._key(claim.access_key_id)
        now = self.clock()
        if claim.presigned:
            assert claim.expires is not None
            if now > claim.expires:
                raise PresignedUrlExpired(
                    "Request has expired", Expires=_iso(claim.expires), ServerTime=_iso(now)
                )
        else:
            signed_at = http_date_epoch(claim.date)
            if signed_at is None:
                raise IncompleteSignature(f"Date '{claim.date[:40]}' is not an HTTP date.")
            if abs(now - signed_at) > MAX_SKEW_S:
                raise RequestTimeTooSkewed(
                    "The difference between the request time and the current time is too large.",
                    RequestTime=claim.date[:40],
                    ServerTime=_iso(now),
                    MaxAllowedSkewMilliseconds="900000",
                )
        bucket = virtual_host_bucket(request.header.get("host", ""), self.config.s3_hosts)
        auth_path = f"/{bucket}{request.raw_path}" if bucket is not None else None
        expected, text = sigv2_expected(
            key, claim, request.method, request.raw_path, request.raw_query, request.headers, auth_path
        )
        if not same(expected, claim.signature):
            raise SignatureMismatch(
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
                AWSAccessKeyId=key.access_key_id,
                StringToSign=text[:4096],
                SignatureProvided=claim.signature[:128],
            )
        self._authorize_now(request, key, self.config.default_region, None)
        return _Verified(key, self.config.default_region)

    def _basic(self, request: _Request, authorization: str) -> _Verified:
        try:
            decoded = base64.b64decode(authorization[len("Basic ") :].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise IncompleteSignature(
                "The Basic credentials are not base64 of '<key id>:<secret>'."
            ) from None
        key_id, _, secret = decoded.partition(":")
        key = self._key(key_id)
        if not same(key.secret_access_key, secret):
            raise SignatureMismatch("The secret does not match the access key ID.")
        self._authorize_now(request, key, self.config.default_region, None)
        return _Verified(key, self.config.default_region)

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.config.max_body_bytes:
                raise BodyTooLargeToVerify(
                    f"The request body is larger than {self.config.max_body_bytes:,} bytes, more than "
                    "any coldbrew API takes."
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _facts(self, request: _Request, region: str, body: bytes | None) -> RequestFacts:
        return RequestFacts(
            request.service, request.method, request.path, dict(request.query), request.header, body,
            region, self.config.account_id,
        )  # fmt: skip

    async def _authorize(self, request: _Request, key: AccessKey, region: str, body: bytes | None) -> None:
        if body is not None and len(body) > _PARSE_OFF_LOOP:
            facts = self._facts(request, region, body)
            needs = await run_in_threadpool(needs_for, facts, self.config.s3_hosts)
            _decide(key, needs, self.config.account_id)
        else:
            self._authorize_now(request, key, region, body)

    def _authorize_now(self, request: _Request, key: AccessKey, region: str, body: bytes | None) -> None:
        _decide(
            key, needs_for(self._facts(request, region, body), self.config.s3_hosts), self.config.account_id
        )


def _decide(key: AccessKey, needs: Iterable[Need], account: str) -> None:
    for need in needs:
        decision = key.policy.decide(need.action, need.resource)
        if decision is Decision.ALLOWED:
            continue
        if decision is Decision.EXPLICIT_DENY:
            why = "of an explicit deny in its policy"
        else:
            why = f"no statement in its policy allows the {need.action} action"
        raise AccessDenied(
            f"Access key {key.access_key_id} is not authorized to perform: {need.action} on resource: "
            f"{(need.resource or '*')[:512]} because {why}."
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: waits for the disconnect, as the server's would

    return replay


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)


def _stamp(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _bare(host: str) -> str:
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def auth_config(settings: Settings) -> AuthConfig:
    return AuthConfig(
        enabled=settings.auth_enabled,
        account_id=settings.account_id,
        default_region=settings.region,
        allowed_hosts=tuple(h for h in settings.allowed_hosts.split(",") if h.strip()),
        bind_host=settings.host,
        s3_hosts=tuple(server_hosts(settings.host)),
    )


def key_ring(settings: Settings) -> KeyRing:
    """The keys file plus the gateway's own key (for reading its S3 over its port)."""
    return KeyRing(settings.keys_path, extra=(internal_key(),))
