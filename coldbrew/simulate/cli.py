"""``coldbrew simulate``: argument handling and output."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from coldbrew.metering.prices import load_prices
from coldbrew.terminal import print_json


def simulate_command(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from coldbrew.simulate import load_spec, simulate
    from coldbrew.simulate.report import build_report, render

    try:
        spec = load_spec(args.spec)
        prices = load_prices(args.prices, override=spec.prices)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"coldbrew: {args.spec}: {exc}", file=sys.stderr)
        return 2
    report = build_report(simulate(spec), prices)
    if args.json:
        print_json(report)
    else:
        render(report)
    return 0


def add_commands(commands: Any) -> None:
    sim = commands.add_parser("simulate", help="replay a traffic spec under a virtual clock and price it")
    sim.add_argument("spec", help="a simulation spec, TOML or JSON (see examples/specs)")
    sim.add_argument("--prices", help="your own price file over the shipped one (COLDBREW_PRICES)")
    sim.add_argument("--json", action="store_true", help="JSON for programs instead of a table")
    sim.set_defaults(func=simulate_command)
