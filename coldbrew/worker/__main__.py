"""``python -m coldbrew.worker --model-dir D (--socket P | --port N) --status-fd FD``."""

from __future__ import annotations

import argparse

from coldbrew.worker.config import WorkerConfig
from coldbrew.worker.main import run_worker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m coldbrew.worker",
        description="Serve one model over the SageMaker container contract (GET /ping, POST /invocations).",
    )
    parser.add_argument("--model-dir", required=True, help="directory the model archive was extracted to")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="Unix domain socket path to listen on")
    where.add_argument("--port", type=int, help="TCP port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address for --port (default 127.0.0.1)")
    parser.add_argument(
        "--status-fd", type=int, required=True, help="inherited fd that receives one JSON status line"
    )
    parser.add_argument(
        "--max-concurrency", type=int, default=1, help="requests predicted at once (default 1)"
    )
    args = parser.parse_args(argv)
    try:
        config = WorkerConfig(
            model_dir=args.model_dir,
            socket_path=args.socket,
            port=args.port,
            host=args.host,
            max_concurrency=args.max_concurrency,
        )
    except ValueError as exc:
        parser.error(str(exc))
    run_worker(config, args.status_fd)


if __name__ == "__main__":
    main()
