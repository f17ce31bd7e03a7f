"""Serving: per-variant pools of execution environments, routing, admission and scaling."""
