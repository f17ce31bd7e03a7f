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
    from coldbrew.simulate.batch import check_batch_prices
    from coldbrew.simulate.report import build_report, render

    try:
        spec = load_spec(args.spec)
        prices = load_prices(args.prices, override=spec.prices)
        if spec.batch is not None:
            check_batch_prices(spec.batch, prices)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"coldbrew: {args.spec}: {exc}", file=sys.stderr)
        return 2
    report = build_report(simulate(spec), prices)
    if args.json:
        print_json(report)
    else:
        render(report)
    return 0


_EPILOG = """\
batch workloads: a [batch] section in the spec also prices the same requests collected
and run as batch jobs, next to the serverless and instance options:
  as a SageMaker Batch Transform job (per second, no minimum), as one AWS Fargate task
  (per vCPU-hour and GB-hour, per second with a one-minute minimum) and as one Lambda
  invocation per request. A job runs startup_s + requests x duration / workers seconds.

  [batch]
  requests_per_day = 10000          # default: the simulated traffic's, per day
  duration_ms = 200                 # default: the simulated mean billed model latency
  jobs_per_day = 1                  # the day's requests split into this many jobs
  instance_type = "ml.m5.large"     # priced from batch_transform_instances
  instance_count = 1
  max_concurrent_transforms = 1     # requests in flight per instance
  transform_startup_s = 0           # billed before the first request, per instance
  fargate_vcpu = 0.5                # a Fargate task size (0.25 vCPU: 0.5-2 GB, ...)
  fargate_memory_gb = 1
  fargate_arch = "x86"              # or "arm"
  fargate_startup_s = 0             # billed before the first request, per task
  lambda_memory_mb = 512            # default: compare.lambda_memory_mb, else memory_mb
  lambda_arch = "x86"

examples/specs/random-forest-10k-a-day.toml reproduces "Serverless Machine Learning
Inference": Fargate $0.0146 and Batch Transform $0.067 for a day of 10,000 x 200 ms.
"""


def add_commands(commands: Any) -> None:
    sim = commands.add_parser(
        "simulate",
        help="replay a traffic spec under a virtual clock and price it",
        description="Replay a traffic spec under a virtual clock through the scaling core and price it\n"
        "on SageMaker Serverless, Lambda and always-on instances (with [batch], as batch jobs too).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sim.add_argument("spec", help="a simulation spec, TOML or JSON (see examples/specs)")
    sim.add_argument("--prices", help="your own price file over the shipped one (COLDBREW_PRICES)")
    sim.add_argument("--json", action="store_true", help="JSON for programs instead of a table")
    sim.set_defaults(func=simulate_command)
