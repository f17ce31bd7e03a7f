"""The cost simulator: replays a traffic pattern through serving's own policy code under a virtual clock."""

from __future__ import annotations

from coldbrew.simulate.engine import simulate
from coldbrew.simulate.spec import SimulationSpec, load_spec

__all__ = ["SimulationSpec", "load_spec", "simulate"]
