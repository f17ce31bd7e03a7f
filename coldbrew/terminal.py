"""Terminal output shared by the command-line tools."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console


def console() -> Console:
    """A rich console; piped or redirected output gets wide lines instead of rich's 80 columns,
    which would squeeze the tables unreadably, unless ``COLUMNS`` says how wide to be."""
    terminal = Console()
    return terminal if terminal.is_terminal or os.environ.get("COLUMNS") else Console(width=200)


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout, for programs (``--json``)."""
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
