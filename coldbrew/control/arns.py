"""ARNs as SageMaker forms them: lower-cased names under the caller's region and account."""

from __future__ import annotations

import re
from dataclasses import dataclass

# SageMaker's own resource-type words in ARNs.
MODEL = "model"
ENDPOINT_CONFIG = "endpoint-config"
ENDPOINT = "endpoint"
TRANSFORM_JOB = "transform-job"

_ARN = re.compile(
    r"^arn:aws[a-z\-]*:sagemaker:(?P<region>[a-z0-9\-]*):(?P<account>\d{12}):(?P<type>[a-z\-]+)/(?P<name>.+)$"
)


@dataclass(frozen=True)
class Arn:
    region: str
    account: str
    resource_type: str
    name: str

    def __str__(self) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account}:{self.resource_type}/{self.name.lower()}"


def make_arn(region: str, account: str, resource_type: str, name: str) -> str:
    return str(Arn(region, account, resource_type, name))


def parse_arn(text: str) -> Arn | None:
    match = _ARN.match(text)
    if match is None:
        return None
    return Arn(match["region"], match["account"], match["type"], match["name"])
