"""What coldbrew reads from a SigV4 Authorization header: the region the client signed for.

coldbrew does not check signatures (any credentials work, as the issue asks); it only honours the
region in the credential scope so ARNs name the region the caller uses.
"""

from __future__ import annotations

import re

_SCOPE = re.compile(
    r"Credential=[^/,\s]+/\d{8}/(?P<region>[a-z0-9\-]+)/(?P<service>[a-z0-9\-.]+)/aws4_request"
)


def signed_region(authorization: str | None) -> str | None:
    if not authorization:
        return None
    match = _SCOPE.search(authorization)
    return match["region"] if match else None
