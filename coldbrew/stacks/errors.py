"""CloudFormation's errors: each class is one error code of the query protocol, with its status.

Raised anywhere in ``coldbrew.stacks`` and rendered once, at the edge (``wire``). Template and
parameter problems are ``ValidationError``s, as CloudFormation answers them.
"""

from __future__ import annotations

from typing import ClassVar

MAX_MESSAGE = 4096


class StackError(Exception):
    code: ClassVar[str] = "InternalFailure"
    status: ClassVar[int] = 500
    fault: ClassVar[str] = "Receiver"

    def __init__(self, message: str) -> None:
        message = message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "..."
        super().__init__(message)
        self.message = message


class SenderError(StackError):
    status = 400
    fault = "Sender"


class ValidationError(SenderError):
    code = "ValidationError"


class TemplateError(ValidationError):
    """A template that cannot be used as written: its message starts as CloudFormation's do."""


class AlreadyExistsException(SenderError):
    code = "AlreadyExistsException"


class ChangeSetNotFound(SenderError):
    code = "ChangeSetNotFound"
    status = 404


class InvalidChangeSetStatus(SenderError):
    code = "InvalidChangeSetStatus"


class LimitExceededException(SenderError):
    code = "LimitExceededException"


class InvalidAction(SenderError):
    code = "InvalidAction"


class RequestTooLarge(SenderError):
    code = "RequestEntityTooLarge"
    status = 413


class InternalFailure(StackError):
    """A bug in coldbrew: the message says so (the log has the traceback)."""
