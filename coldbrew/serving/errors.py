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
