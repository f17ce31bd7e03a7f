"""Which bucket names and object keys the store accepts.

Keys never become file paths (objects live in content files named by random ids, see
:mod:`coldbrew.s3.store`), so any key S3 accepts is stored as it is: ``../../etc/passwd``,
``/abs``, ``a//b`` are just names. Only what S3 itself refuses, or what S3's XML cannot carry
(NUL), is refused here.
"""

from __future__ import annotations

import ipaddress
import re

from .errors import InvalidArgument, InvalidBucketName, KeyTooLongError

MAX_KEY_BYTES = 1024
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


def check_bucket_name(name: str) -> str:
    """``name`` if it is a valid S3 bucket name (the rules for new general purpose buckets)."""
    if not _BUCKET.fullmatch(name) or ".." in name or ".-" in name or "-." in name or _is_ip(name):
        raise InvalidBucketName(BucketName=name[:255])
    return name


def is_bucket_name(name: str) -> bool:
    try:
        check_bucket_name(name)
    except InvalidBucketName:
        return False
    return True


def check_key(key: str) -> bytes:
    """The key as stored (UTF-8 bytes, which is also S3's listing order)."""
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a malformed percent-escape
        raise InvalidArgument("Object key is not valid UTF-8.", ArgumentName="key") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise KeyTooLongError(Size=str(len(encoded)), MaxSizeAllowed=str(MAX_KEY_BYTES))
    if "\x00" in key:
        raise InvalidArgument("Object key must not contain a NUL character.", ArgumentName="key")
    return encoded


def _is_ip(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True
