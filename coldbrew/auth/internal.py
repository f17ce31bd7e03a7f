"""The gateway's own access key, for the requests it makes to itself (reading ``s3://`` model data
from its embedded S3 over its port).

Made once per process with a random secret, held in memory only (never in the keys file, never
printed), and allowed to read S3 only: knowing the server's address is not enough to use it.
"""

from __future__ import annotations

import functools

from coldbrew.auth.keys import AccessKey, new_key
from coldbrew.auth.policy import Effect, Policy, Statement

_READ_S3 = ("s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation", "s3:ListAllMyBuckets")


@functools.cache
def internal_key() -> AccessKey:
    return new_key(Policy((Statement(Effect.ALLOW, _READ_S3, ("*",)),)), "the gateway's own reads of its S3")


def internal_credentials() -> tuple[str, str]:
    key = internal_key()
    return key.access_key_id, key.secret_access_key
