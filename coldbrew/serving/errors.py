"""Errors serving raises towards the control plane."""

from __future__ import annotations

from coldbrew.errors import ColdbrewError


class DeployError(ColdbrewError):
    """A deployment failed for a reason the user can act on; ``str()`` becomes the FailureReason.

    It is never a response to a request (CreateEndpoint answers before deploying), so it keeps the
    root's InternalFailure code; the reconciler records it on the endpoint instead.
    """
