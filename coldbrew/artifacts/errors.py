"""Errors of the artifact store."""

from __future__ import annotations

from coldbrew.errors import ColdbrewError


class ArtifactError(ColdbrewError):
    """Model data could not be materialized.

    ``str()`` is one line a person can act on; it becomes an endpoint's FailureReason verbatim, so it
    names the model data and says what is wrong with it.
    """
