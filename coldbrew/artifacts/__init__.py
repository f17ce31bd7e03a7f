"""Model data: fetch ``file://`` and ``s3://`` model artifacts once, check them, and extract them
safely into a content-addressed cache that workers mount as /opt/ml/model."""

from __future__ import annotations

from .errors import ArtifactError
from .store import ArtifactStore

__all__ = ["ArtifactError", "ArtifactStore"]
