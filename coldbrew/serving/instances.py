"""Instance types a provisioned variant may name: memory and vCPUs, as AWS lists them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_mb: int


_TABLE = {
    "ml.t2.medium": (2, 4096),
    "ml.t2.large": (2, 8192),
    "ml.t2.xlarge": (4, 16384),
    "ml.t2.2xlarge": (8, 32768),
    "ml.m4.xlarge": (4, 16384),
    "ml.m4.2xlarge": (8, 32768),
    "ml.m5.large": (2, 8192),
    "ml.m5.xlarge": (4, 16384),
    "ml.m5.2xlarge": (8, 32768),
    "ml.m5.4xlarge": (16, 65536),
    "ml.c5.large": (2, 4096),
    "ml.c5.xlarge": (4, 8192),
    "ml.c5.2xlarge": (8, 16384),
    "ml.c5.4xlarge": (16, 32768),
    "ml.r5.large": (2, 16384),
    "ml.r5.xlarge": (4, 32768),
    "ml.g4dn.xlarge": (4, 16384),
    "ml.g5.xlarge": (4, 16384),
}

# Unknown types get the size of a common general-purpose instance rather than no limit.
DEFAULT = InstanceType("ml.m5.large", 2, 8192)


def instance_type(name: str) -> InstanceType:
    vcpus, memory = _TABLE.get(name, (DEFAULT.vcpus, DEFAULT.memory_mb))
    return InstanceType(name, vcpus, memory)
