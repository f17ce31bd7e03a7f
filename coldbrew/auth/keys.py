"""Access keys: stored in ``<data_dir>/keys.json`` (mode 0600), held in memory by the gateway.

SigV4 is a shared-secret scheme: the server must hold each secret to recompute signatures, so
the file holds secrets in the clear and is readable by its owner only. Writers (``coldbrew keys``)
replace it atomically under a lock; the gateway notices a changed file (its size, mtime and inode,
looked at most once a second) and reloads it, so a key created or deleted while the server runs
takes effect within a second without a database read per request.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coldbrew.auth.errors import PolicyError
from coldbrew.auth.policy import Policy, parse_policy

KEYS_FILE = "keys.json"
_ID_PREFIX = "AKCB"  # 20 characters in all, like AWS's AKIA... ids, so tools that check the shape accept them
_RELOAD_EVERY_S = 1.0
_MISS_RELOAD_EVERY_S = 0.1

log = logging.getLogger("coldbrew.auth")


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    secret_access_key: str
    policy: Policy
    created: str
    description: str = ""

    def __repr__(self) -> str:  # never the secret, whoever prints the object
        return f"AccessKey({self.access_key_id!r}, created={self.created!r})"

    def to_json(self) -> dict[str, Any]:
        return {
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Policy": self.policy.to_json(),
            "Created": self.created,
            "Description": self.description,
        }

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> AccessKey:
        return cls(
            access_key_id=str(item["AccessKeyId"]),
            secret_access_key=str(item["SecretAccessKey"]),
            policy=parse_policy(item["Policy"]),
            created=str(item.get("Created", "")),
            description=str(item.get("Description", "")),
        )


def new_key(policy: Policy, description: str = "") -> AccessKey:
    key_id = _ID_PREFIX + base64.b32encode(secrets.token_bytes(10)).decode()[:16]
    secret = base64.b64encode(secrets.token_bytes(30)).decode()  # 40 characters, as AWS's
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return AccessKey(key_id, secret, policy, created, description)


class KeyFileError(Exception):
    """The keys file cannot be read as keys (said at start-up and by ``coldbrew keys``)."""


def read_keys(path: Path) -> dict[str, AccessKey]:
    """The keys in ``path`` by id; none if the file does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        document = json.loads(text)
        return {k.access_key_id: k for k in (AccessKey.from_json(i) for i in document.get("keys", []))}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, PolicyError) as exc:
        raise KeyFileError(f"{path} is not a coldbrew keys file: {type(exc).__name__}: {exc}") from None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, keys: dict[str, AccessKey]) -> None:
    document = {"keys": [k.to_json() for k in keys.values()]}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Created 0600 from the start: the secrets are never readable by others, not even briefly.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (json.dumps(document, indent=2) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def update_keys(path: Path, change: Callable[[dict[str, AccessKey]], None]) -> dict[str, AccessKey]:
    """Read, change (in place) and write the keys file under a lock; returns the new keys."""
    with _locked(path):
        keys = read_keys(path)
        change(keys)
        _write(path, keys)
        return keys


def add_key(path: Path, key: AccessKey) -> None:
    update_keys(path, lambda keys: keys.__setitem__(key.access_key_id, key))


def delete_key(path: Path, key_id: str) -> bool:
    found = False

    def remove(keys: dict[str, AccessKey]) -> None:
        nonlocal found
        found = keys.pop(key_id, None) is not None

    update_keys(path, remove)
    return found


class KeyRing:
    """The keys the gateway knows, from the keys file (reloaded when it changes) plus any given
    in memory (the server's own key for reading its embedded S3, never written anywhere)."""

    def __init__(
        self, path: Path, extra: tuple[AccessKey, ...] = (), clock: Callable[[], float] = time.monotonic
    ):
        self.path = path
        self.extra = {k.access_key_id: k for k in extra}
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, AccessKey] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._bad_stamp: tuple[int, int, int] | None = None
        self.generation = 0
        """Bumped on every reload, so caches derived from secrets can be dropped."""
        self.reload()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def reload(self) -> None:
        with self._lock:
            stamp = self._file_stamp()
            self._checked = self._clock()
            if stamp == self._stamp and self.generation:
                return
            self._keys = read_keys(self.path)
            self._stamp = stamp
            self.generation += 1

    def get(self, key_id: str) -> AccessKey | None:
        key = self.extra.get(key_id)
        if key is not None:
            return key
        since = self._clock() - self._checked
        key = self._keys.get(key_id)
        # Looked at once a second; sooner for an unknown id, so a key just made works at once
        # (at most ten looks a second, however many unknown ids a client tries).
        if since >= _RELOAD_EVERY_S or (key is None and since >= _MISS_RELOAD_EVERY_S):
            self._reload_quietly()
            key = self._keys.get(key_id)
        return key

    def _reload_quietly(self) -> None:
        try:
            self.reload()
        except KeyFileError as exc:
            # A half-edited file: keep serving with the keys we had, and say so once per version.
            stamp = self._file_stamp()
            if stamp != self._bad_stamp:
                log.warning("keeping the keys loaded before: %s", exc)
                self._bad_stamp = stamp
            self._checked = self._clock()

    def __len__(self) -> int:
        return len(self._keys)
