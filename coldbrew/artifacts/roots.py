"""Where ``file://`` and plain-path model data may be read from: ``COLDBREW_MODEL_ROOTS``.

A path is resolved (symlinks and ``..``) before it is checked, so neither leads out of a root;
one outside every root is refused without being looked at further, and the refusal is the same
whether or not it exists, so a client learns nothing about the host's files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .errors import ArtifactError

SETTING = "COLDBREW_MODEL_ROOTS"


class ModelRoots:
    """Directories local model data may come from; ``None`` for any the server's user can read."""

    def __init__(self, roots: Sequence[Path | str] | None) -> None:
        self.roots: tuple[str, ...] | None = (
            None if roots is None else tuple(os.path.realpath(r) for r in roots if str(r).strip())
        )

    @classmethod
    def anywhere(cls) -> ModelRoots:
        return cls(None)

    @classmethod
    def from_setting(cls, value: str | None, auth_on: bool, loopback: bool = True) -> ModelRoots:
        """``COLDBREW_MODEL_ROOTS`` (directories separated by ``os.pathsep``; empty: none), or the
        default when it is not set (:func:`model_roots_default`)."""
        if value is None:
            return model_roots_default(auth_on, loopback)
        return cls([part for part in value.split(os.pathsep) if part.strip()])

    @property
    def unrestricted(self) -> bool:
        return self.roots is None

    def allows(self, path: Path | str) -> bool:
        """Whether ``path``, resolved, is one of the roots or inside one."""
        if self.roots is None:
            return True
        resolved = os.path.realpath(path)
        return any(resolved == root or resolved.startswith(root.rstrip("/") + "/") for root in self.roots)

    def check(self, path: Path, label: str) -> Path:
        """``path`` resolved, if it is under a root; else ArtifactError naming only ``label``."""
        if self.roots is None:
            return path
        if not self.allows(path):
            raise ArtifactError(
                f"Model data {label} is not under an allowed model root ({SETTING}): put it under one "
                "of the directories the server's operator allows, or upload it to S3."
            )
        return Path(os.path.realpath(path))


def model_roots_default(auth_on: bool, loopback: bool = True) -> ModelRoots:
    """With authentication on, no local path is readable until the operator names roots: a
    client could otherwise have the server copy any file it can read into a model. With it off on
    loopback (a laptop, the two-command start), anything the server's user can read: whoever can
    call the API runs on this machine, and on a machine shared with other users the operator sets
    roots (or turns authentication on)."""
    return ModelRoots(None) if not auth_on and loopback else ModelRoots(())
