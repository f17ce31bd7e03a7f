"""The names SageMaker gives its endpoints' logs, and CloudWatch Logs' ARNs for them.

SageMaker writes an endpoint's containers' stdout and stderr to the log group
``/aws/sagemaker/Endpoints/<EndpointName>``, one stream per instance named
``<production-variant-name>/<instance-id>`` (``AllTraffic/i-0123456789abcdef0``). coldbrew's
execution environments play the instances' part: each gets a stream of its own, named the same
way with an id of the same shape, new for every environment (ids are never reused, so a stream
holds exactly one environment's life).
"""

from __future__ import annotations

import re
import secrets

GROUP_PREFIX = "/aws/sagemaker/Endpoints/"

CAP_STREAM = "coldbrew/dropped-events"
"""The stream that says when coldbrew dropped a group's oldest events to keep it under its cap."""

_GROUP_ARN = re.compile(r"arn:aws[a-z\-]*:logs:[a-z0-9\-]*:\d{12}:log-group:(?P<name>[^:]+)(?::\*)?")


def group_name(endpoint: str) -> str:
    return GROUP_PREFIX + endpoint


def new_stream_name(variant: str) -> str:
    """A stream for a new environment of ``variant``: ``AllTraffic/i-`` and 17 hex digits, as an
    EC2 instance id."""
    return f"{variant}/i-{secrets.token_hex(9)[:17]}"


def group_arn(region: str, account: str, group: str) -> str:
    """As DescribeLogGroups' ``arn`` shows it (with the trailing ``:*``)."""
    return f"arn:aws:logs:{region}:{account}:log-group:{group}:*"


def stream_arn(region: str, account: str, group: str, stream: str) -> str:
    return f"arn:aws:logs:{region}:{account}:log-group:{group}:log-stream:{stream}"


def group_from_identifier(identifier: str) -> str:
    """A ``logGroupIdentifier``: a group's name, or its ARN (with or without ``:*``)."""
    match = _GROUP_ARN.fullmatch(identifier)
    return match["name"] if match else identifier
