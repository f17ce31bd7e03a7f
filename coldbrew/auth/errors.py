"""Authentication and authorization failures: each class is one failure, with the code AWS answers
it with in each protocol family.

AWS names the same failure differently per protocol: an unknown access key is
``UnrecognizedClientException`` to a JSON service (SageMaker, CloudWatch Logs), ``InvalidAccessKeyId``
to S3 and ``InvalidClientTokenId`` to a query-protocol service (CloudWatch's query API). The
renderer (:mod:`coldbrew.gateway.auth_responses`) picks the column for the request's protocol; nothing else
in coldbrew turns these into bytes. Messages never hold a secret: only the access key id, dates
and what the client itself sent.
"""

from __future__ import annotations

from typing import ClassVar

from coldbrew.errors import ColdbrewError


class PolicyError(ValueError):
    """A policy document that coldbrew cannot take (said when the key is created, not per request)."""


class AuthError(ColdbrewError):
    """Root of the failures a request's credentials or permissions cause (all 4xx)."""

    code: ClassVar[str] = "AccessDeniedException"  # JSON protocols (AWS JSON, REST JSON, CBOR)
    status: ClassVar[int] = 403
    s3_code: ClassVar[str] = "AccessDenied"
    s3_status: ClassVar[int] = 403
    query_code: ClassVar[str] = "AccessDenied"
    query_status: ClassVar[int] = 403


class MissingAuthentication(AuthError):
    """No signature at all, while auth is on."""

    code, status = "MissingAuthenticationTokenException", 403
    s3_code, s3_status = "AccessDenied", 403
    query_code, query_status = "MissingAuthenticationToken", 403


class IncompleteSignature(AuthError):
    """A signature that cannot be read: a malformed Authorization header or presigned query."""

    code, status = "IncompleteSignatureException", 400
    s3_code, s3_status = "AuthorizationHeaderMalformed", 400
    query_code, query_status = "IncompleteSignature", 400


class MissingContentSha256(AuthError):
    """S3 wants ``x-amz-content-sha256`` on every header-signed SigV4 request."""

    code, status = "IncompleteSignatureException", 400
    s3_code, s3_status = "InvalidRequest", 400
    query_code, query_status = "IncompleteSignature", 400


class UnknownAccessKey(AuthError):
    code, status = "UnrecognizedClientException", 403
    s3_code, s3_status = "InvalidAccessKeyId", 403
    query_code, query_status = "InvalidClientTokenId", 403


class SignatureMismatch(AuthError):
    code, status = "InvalidSignatureException", 403
    s3_code, s3_status = "SignatureDoesNotMatch", 403
    query_code, query_status = "SignatureDoesNotMatch", 403


class RequestTimeTooSkewed(AuthError):
    """The request's date is more than 15 minutes from the server's clock."""

    code, status = "InvalidSignatureException", 403  # "Signature expired: ...", as AWS JSON services say
    s3_code, s3_status = "RequestTimeTooSkewed", 403
    query_code, query_status = "RequestExpired", 400


class PresignedUrlExpired(AuthError):
    code, status = "InvalidSignatureException", 403
    s3_code, s3_status = "AccessDenied", 403  # S3: "Request has expired"
    query_code, query_status = "RequestExpired", 400


class PayloadHashMismatch(AuthError):
    """The body is not the one the client signed (``x-amz-content-sha256`` or a chunk signature)."""

    code, status = "InvalidSignatureException", 403
    s3_code, s3_status = "XAmzContentSHA256Mismatch", 400
    query_code, query_status = "SignatureDoesNotMatch", 403


class ChunkSignatureMismatch(AuthError):
    code, status = "InvalidSignatureException", 403
    s3_code, s3_status = "SignatureDoesNotMatch", 403
    query_code, query_status = "SignatureDoesNotMatch", 403


class AccessDenied(AuthError):
    """A valid key whose policy does not allow the action (or explicitly denies it)."""

    code, status = "AccessDeniedException", 400  # SageMaker's and CloudWatch Logs' status for it
    s3_code, s3_status = "AccessDenied", 403
    query_code, query_status = "AccessDenied", 403


class HostNotAllowed(AuthError):
    """A Host header this server does not answer to (a DNS-rebinding page, or a missing
    ``--allowed-host``)."""

    code, status = "AccessDeniedException", 403
    s3_code, s3_status = "AccessDenied", 403
    query_code, query_status = "AccessDenied", 403


class BodyTooLargeToVerify(AuthError):
    """A signed body bigger than any coldbrew API takes: not read further to check its hash."""

    code, status = "RequestEntityTooLargeException", 413
    s3_code, s3_status = "EntityTooLarge", 400
    query_code, query_status = "RequestEntityTooLarge", 413
