"""The status pipe: a worker or zygote reports readiness, or why it failed, as one JSON line
(a :class:`~coldbrew.worker.messages.WorkerStatus`).

The gateway creates the pipe, the child inherits (or is handed) its write end and writes the line
once it can serve, or before it exits; end of file without a line means it died first.
"""

from __future__ import annotations

import asyncio
import os

from pydantic import ValidationError

from coldbrew.worker.messages import WorkerStatus


async def read_status(fd: int) -> WorkerStatus:
    """The one status line a worker or zygote writes on its pipe (EOF without one: failed)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    data = bytearray()
    finished: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        data.extend(chunk)
        if (not chunk or b"\n" in data) and not finished.done():
            finished.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await finished
    finally:
        loop.remove_reader(fd)
    if not data.strip():
        return WorkerStatus(ready=False)
    try:
        return WorkerStatus.model_validate_json(data.splitlines()[0])
    except ValidationError:
        return WorkerStatus(ready=False, error="the worker reported an unreadable status")
