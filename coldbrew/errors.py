"""The error hierarchy: each class is one SageMaker error code with its HTTP status.

Errors are raised anywhere in coldbrew and translated to a wire response in exactly one place per
protocol (``coldbrew.gateway``). The message is what the client sees, so it must say what to change.
Each package's own errors live with it and derive from the root here: ``ArtifactError``
(``coldbrew.artifacts``), ``WorkerStartError`` (``coldbrew.backends``) and ``DeployError``
(``coldbrew.serving``) keep the root's InternalFailure code, because they reach users as an
endpoint's FailureReason or are turned into a ModelError, never as a response of their own.
"""

from __future__ import annotations

from typing import Any, ClassVar

MAX_MESSAGE_CHARS = 4096


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


class ColdbrewError(Exception):
    """Root of every error a client can see. ``code`` is SageMaker's error code."""

    code: ClassVar[str] = "InternalFailure"
    status: ClassVar[int] = 500

    def __init__(self, message: str, **fields: Any) -> None:
        # A backstop: messages quote a client's values bounded where they are written, but no
        # message, however it was built, sends a client megabytes back.
        super().__init__(_bounded(message))
        self.message = _bounded(message)
        # Extra members of the error shape (ModelError's OriginalStatusCode and so on); a model's
        # OriginalMessage is bounded too.
        self.fields = {k: _bounded(v) if isinstance(v, str) else v for k, v in fields.items()}

    def body(self) -> dict[str, Any]:
        return {"__type": self.code, "message": self.message, **self.fields}


# --- control plane (AWS JSON 1.1) ---------------------------------------------------------------


class ValidationException(ColdbrewError):
    code = "ValidationException"
    status = 400


class ResourceNotFound(ColdbrewError):
    code = "ResourceNotFound"
    status = 400


class ResourceInUse(ColdbrewError):
    code = "ResourceInUse"
    status = 400


class ResourceLimitExceeded(ColdbrewError):
    code = "ResourceLimitExceeded"
    status = 400


class UnknownOperationException(ColdbrewError):
    code = "UnknownOperationException"
    status = 400


class SerializationException(ColdbrewError):
    code = "SerializationException"
    status = 400


class InternalFailure(ColdbrewError):
    code = "InternalFailure"
    status = 500


# --- invocations (REST JSON) ------------------------------------------------------------------------


class ValidationError(ColdbrewError):
    code = "ValidationError"
    status = 400


class ThrottlingException(ColdbrewError):
    # HTTP 400 as on SageMaker, so boto3's retry modes see the code and retry with backoff.
    code = "ThrottlingException"
    status = 400


class ModelError(ColdbrewError):
    code = "ModelError"
    status = 424
    node: str | None = None
    """The Ray node of the environment it happened in (``--backend ray``), for its meter record;
    None on one machine, or when no environment was reached."""


class ModelNotReadyException(ColdbrewError):
    code = "ModelNotReadyException"
    status = 429


class ServiceUnavailable(ColdbrewError):
    code = "ServiceUnavailable"
    status = 503


class InternalDependencyException(ColdbrewError):
    code = "InternalDependencyException"
    status = 530
