"""Terminal output shared by the command-line tools."""

from __future__ import annotations

from rich.console import Console


def console() -> Console:
    """A rich console; piped or redirected output gets wide lines instead of rich's 80 columns,
    which would squeeze the tables unreadably."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=200)
