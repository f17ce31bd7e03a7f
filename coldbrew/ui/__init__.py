"""The dashboard at ``/ui``: every endpoint, what it is doing and what it costs (docs/ui.md)."""

from coldbrew.ui.app import Dashboard
from coldbrew.ui.sources import UiSources

__all__ = ["Dashboard", "UiSources"]
