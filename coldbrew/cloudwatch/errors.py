"""CloudWatch's errors: each class is one error code, with the shape name the JSON and CBOR
protocols send in ``__type`` and the code the query protocol (and ``x-amzn-query-error``) sends.

CloudWatch is "query compatible": botocore reads the query code from the ``x-amzn-query-error``
header of a JSON or CBOR error, so ``client.exceptions.InvalidParameterValueException`` is raised
with ``Error.Code == "InvalidParameterValue"`` whichever protocol the client speaks.
"""

from __future__ import annotations

from typing import ClassVar

NAMESPACE = "com.amazonaws.cloudwatch"


class CloudWatchError(Exception):
    code: ClassVar[str] = "InternalServiceError"
    """The query protocol's code (the model's ``error.code``)."""
    shape: ClassVar[str] = "InternalServiceFault"
    """The modelled error shape, or the code for errors the model does not list."""
    status: ClassVar[int] = 500
    fault: ClassVar[str] = "Receiver"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def type(self) -> str:
        return f"{NAMESPACE}#{self.shape}"


class SenderError(CloudWatchError):
    status = 400
    fault = "Sender"


class InvalidParameterValue(SenderError):
    code, shape = "InvalidParameterValue", "InvalidParameterValueException"


class InvalidParameterCombination(SenderError):
    code, shape = "InvalidParameterCombination", "InvalidParameterCombinationException"


class MissingParameter(SenderError):
    code, shape = "MissingParameter", "MissingRequiredParameterException"


class InvalidNextToken(SenderError):
    code = shape = "InvalidNextToken"


class ValidationError(SenderError):
    """What CloudWatch answers GetMetricData's bad queries with (not in the model)."""

    code = shape = "ValidationError"


class InvalidAction(SenderError):
    """An operation CloudWatch has and coldbrew does not serve, or none at all."""

    code = shape = "InvalidAction"


class SerializationError(SenderError):
    """A body that is not what its protocol says (not CBOR, not JSON, not a form)."""

    code = shape = "SerializationException"


class RequestTooLarge(SenderError):
    code = shape = "RequestEntityTooLarge"
    status = 413


class InternalServiceError(CloudWatchError):
    """A bug in coldbrew: the message says so and nothing more (the log has the traceback)."""
