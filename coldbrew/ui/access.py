"""Who is looking, and what their key's policy lets them see and do.

The dashboard asks the same policy the gateway asks for API requests
(:meth:`coldbrew.auth.policy.Policy.decide`) with IAM's action names: a page needs the read actions
its data would need through the API, an action the permissions of the API request it makes (found
by :func:`coldbrew.auth.actions.needs_for`, as the gateway finds them). With authentication off
there is no key and, as on the API, everything is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from coldbrew.auth.actions import METRICS_ACTION, Need, sagemaker_arn
from coldbrew.auth.keys import AccessKey
from coldbrew.auth.policy import Decision

LIST_ENDPOINTS = "sagemaker:ListEndpoints"
DESCRIBE_ENDPOINT = "sagemaker:DescribeEndpoint"
METRICS = "cloudwatch:GetMetricStatistics"
LOGS = "logs:FilterLogEvents"
DELETE_ENDPOINT = "sagemaker:DeleteEndpoint"
INVOKE = "sagemaker:InvokeEndpoint"
UPDATE_ENDPOINT = "sagemaker:UpdateEndpoint"
MACHINE = METRICS_ACTION
"""The machine page shows what ``GET /metrics`` exports (budget, zygotes, evictions)."""


@dataclass(frozen=True)
class Viewer:
    key: AccessKey | None
    """None: authentication is off."""
    region: str
    account: str

    @property
    def name(self) -> str:
        return self.key.access_key_id if self.key is not None else "anonymous (authentication is off)"

    def can(self, action: str, resource: str | None = None) -> bool:
        if self.key is None:
            return True
        return self.key.policy.decide(action, resource) is Decision.ALLOWED

    def allows(self, needs: Iterable[Need]) -> Need | None:
        """The first of ``needs`` the key may not do; None if it may do them all."""
        for need in needs:
            if not self.can(need.action, need.resource):
                return need
        return None

    def endpoint_arn(self, name: str) -> str:
        return sagemaker_arn(self.region, self.account, "endpoint", name)

    def log_group_arn(self, group: str) -> str:
        return f"arn:aws:logs:{self.region}:{self.account}:log-group:{group}:*"

    def may_act_on(self, endpoint: str) -> dict[str, bool]:
        """Which of the endpoint page's actions to offer (the API call decides in the end)."""
        arn = self.endpoint_arn(endpoint)
        return {
            "delete": self.can(DELETE_ENDPOINT, arn),
            "invoke": self.can(INVOKE, arn),
            # The new endpoint config's name is made when the form is sent; the API decides on it.
            "update": self.can(UPDATE_ENDPOINT, arn),
        }
