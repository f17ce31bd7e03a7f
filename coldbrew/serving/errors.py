"""Errors serving raises towards the control plane."""

from __future__ import annotations

from coldbrew.errors import ColdbrewError, ModelError


class DeployError(ColdbrewError):
    """A deployment failed for a reason the user can act on; ``str()`` becomes the FailureReason.

    It is never a response to a request (CreateEndpoint answers before deploying), so it keeps the
    root's InternalFailure code; the reconciler records it on the endpoint instead.
    """


class EnvironmentLost(ModelError):
    """The worker exited (or was stopped for its memory) while it handled the invocation."""


class InvocationTimedOut(ModelError):
    """The invocation ran past its time limit and was stopped."""


class ModelAnswered(ModelError):
    """The model answered with an error status; its own body and content type are kept (an async
    request's FailureLocation holds them, as on SageMaker)."""

    def __init__(self, message: str, body: bytes, content_type: str, **fields: object) -> None:
        super().__init__(message, **fields)
        self.response_body = body
        self.response_content_type = content_type
