"""``python -m coldbrew.worker --model-dir D (--socket P | --port N) --status-fd FD``, or
``python -m coldbrew.worker --launch --status-fd FD`` with a WorkerLaunch JSON on stdin (how the
gateway starts one: the model's environment would be readable by anyone in a command line)."""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from coldbrew.worker.main import run_worker
from coldbrew.worker.messages import WorkerLaunch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m coldbrew.worker",
        description="Serve one model over the SageMaker container contract (GET /ping, POST /invocations).",
    )
    parser.add_argument(
        "--launch",
        action="store_true",
        help="read what to serve as a WorkerLaunch JSON from stdin instead of from the options below",
    )
    parser.add_argument("--model-dir", help="directory the model archive was extracted to")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket", help="Unix domain socket path to listen on")
    where.add_argument("--port", type=int, help="TCP port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address for --port (default 127.0.0.1)")
    parser.add_argument(
        "--status-fd", type=int, required=True, help="inherited fd that receives one JSON status line"
    )
    parser.add_argument(
        "--environment-concurrency",
        type=int,
        default=1,
        help="invocations served at once (default 1)",
    )
    args = parser.parse_args(argv)
    try:
        if args.launch:
            if args.model_dir is not None or args.socket is not None or args.port is not None:
                parser.error("--launch reads everything from stdin: give no --model-dir, --socket or --port")
            message = sys.stdin.buffer.read()
            # The model sees the stdin a forked worker has (the zygote's), not an exhausted pipe.
            _stdin_from_devnull()
            launch = WorkerLaunch.model_validate_json(message)
        elif args.model_dir is None or (args.socket is None and args.port is None):
            parser.error("give --model-dir and one of --socket and --port, or --launch")
        else:
            launch = WorkerLaunch(
                model_dir=args.model_dir,
                socket_path=args.socket,
                port=args.port,
                host=args.host,
                environment_concurrency=args.environment_concurrency,
            )
    except ValidationError as exc:
        parser.error(str(exc))
    run_worker(launch, args.status_fd)


def _stdin_from_devnull() -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


if __name__ == "__main__":
    main()
