"""Backends: how execution environments run. ``local`` starts worker processes on this machine."""
