"""The log collector: every environment's stdout and stderr, and coldbrew's events, into the store.

Capture. Each environment gets a pipe (:meth:`LogCollector.open`). Its write end becomes the
worker's fd 1 and 2 (``WorkerSpec.output_fd``: a fresh interpreter and a user's ``exec:`` server
get it from ``subprocess``, a forked worker from the zygote over SCM_RIGHTS, ``dup2``'d in the
child before it runs anything), so everything the worker and the processes it starts write goes
there, from the first import to the last traceback, with nothing changed in the model's code.
The gateway closes its own copy once the worker has started: end of file on the read end means
the environment and everything it started are gone.

Off the hot path. One thread reads every pipe (``selectors``), splits lines into events and
writes them to SQLite in batches (:class:`~coldbrew.logs.store.LogWriter`) every
``flush_interval_s``. Nothing on the event loop does log I/O: opening a stream makes a pipe and
queues it, and an event (environment started, released, failed) is a ``deque.append``. A worker's
write never waits for the database either, only for the pipe; the thread reads pipes whenever it
is not writing a batch, so a pipe fills (and the worker waits) only while one is written.

The server's own output. Workers used to write straight to the gateway's stdout/stderr; their
lines still appear there, copied by this thread with the stream's name in front (``echo``), at
most ``ECHO_BURST`` lines at once and ``ECHO_RATE`` a second per stream, so a chatty model cannot
fill the disk through the server's log either; the rest is counted in one line and kept in the
store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from coldbrew.logs.names import group_name, new_stream_name
from coldbrew.logs.store import MAX_MESSAGE_BYTES, Event, LogWriter, NewStream

log = logging.getLogger("coldbrew.logs")

READ_CHUNK = 1 << 16
READS_PER_ROUND = 16
"""At most 1 MiB from one pipe before the thread turns to the others (and to writing a batch)."""
MAX_PENDING_BYTES = 8 << 20
"""Past this much unwritten output the batch is written at once rather than at the next tick."""
PARTIAL_LINE_S = 1.0
"""Output with no newline yet (a progress bar) becomes an event once it has waited this long."""
PRUNE_INTERVAL_S = 60.0
ECHO_BURST = 200.0
ECHO_RATE = 50.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class EnvironmentLog:
    """One environment's log stream, as serving holds it."""

    def __init__(self, collector: LogCollector, group: str, stream: str, write_fd: int) -> None:
        self.collector = collector
        self.group = group
        self.stream = stream
        self.output_fd: int | None = write_fd
        """The pipe's write end, for the backend to give the worker as stdout and stderr."""

    def handed_over(self) -> None:
        """The worker has its copy (or never started): close the gateway's, so end of file on
        the pipe means the environment is gone."""
        fd, self.output_fd = self.output_fd, None
        if fd is not None:
            os.close(fd)

    def event(self, message: str) -> None:
        """A line of coldbrew's own about this environment (no I/O: appended for the thread)."""
        self.collector.event(self.group, self.stream, "coldbrew: " + message)


@dataclass
class _Pipe:
    fd: int
    group: str
    stream: str
    label: str
    partial: bytearray = field(default_factory=bytearray)
    partial_since: float = 0.0
    tokens: float = ECHO_BURST
    refilled: float = field(default_factory=time.monotonic)
    unechoed: int = 0


class LogCollector:
    def __init__(
        self,
        db_path: Path,
        *,
        max_bytes_per_endpoint: int,
        retention_days: float,
        flush_interval_s: float = 0.25,
        echo: TextIO | None = None,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.db_path = db_path
        self.writer = LogWriter(db_path, max_bytes_per_endpoint, int(retention_days * 86_400_000))
        self.flush_interval_s = flush_interval_s
        self.echo = echo
        self.clock = clock
        self._inbox: deque[_Pipe | NewStream | Event] = deque()
        """From other threads to the collector's: new pipes, new streams and coldbrew's events."""
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pipes: dict[int, _Pipe] = {}
        self._streams: list[NewStream] = []
        self._events: list[Event] = []
        self._pending_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._synced = threading.Condition()
        self._sync_asked = 0
        self._sync_done = 0
        self._last_prune = 0.0

    # --- other threads ------------------------------------------------------------------------

    def open(self, endpoint: str, variant: str) -> EnvironmentLog:
        """A new stream ``<variant>/i-...`` in the endpoint's group, and the pipe that feeds it."""
        group, stream = group_name(endpoint), new_stream_name(variant)
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        self._inbox.append(NewStream(group, stream, self.clock()))
        self._inbox.append(_Pipe(read_fd, group, stream, f"{endpoint} {stream}"))
        self._wake()
        return EnvironmentLog(self, group, stream, write_fd)

    def event(self, group: str, stream: str, message: str) -> None:
        self._inbox.append(Event(group, stream, self.clock(), message))

    def sync(self, timeout_s: float = 5.0) -> None:
        """Return once everything written to the pipes and queued so far is in the store, so a
        reader sees it (what ``/metrics`` does for the meter)."""
        if self._thread is None or not self._thread.is_alive():
            return
        with self._synced:
            self._sync_asked += 1
            wanted = self._sync_asked
        self._wake()
        with self._synced:
            self._synced.wait_for(lambda: self._sync_done >= wanted or self._stop.is_set(), timeout_s)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="coldbrew-logs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Read what the pipes still hold, write it, and stop (after serving has stopped its
        workers, so their last lines are in)."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        else:
            self._final()
        with self._synced:
            self._synced.notify_all()
        self.writer.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # --- the collector's thread ---------------------------------------------------------------

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_interval_s
        while not self._stop.is_set():
            try:
                timeout = max(0.0, next_flush - time.monotonic())
                ready = self._selector.select(timeout)
                # coldbrew's events first: they waited for this wake-up, the output in the pipes did not.
                self._take_inbox()
                woken = False
                for key, _ in ready:
                    if key.fd == self._wake_r:
                        woken = True
                        with contextlib.suppress(BlockingIOError):
                            while os.read(self._wake_r, 4096):
                                pass
                    else:
                        self._read(self._pipes[key.fd])
                self._take_inbox()
                with self._synced:
                    asked = self._sync_asked
                due = time.monotonic() >= next_flush
                if due or asked > self._sync_done or self._pending_bytes > MAX_PENDING_BYTES or woken:
                    if due:
                        self._flush_partial_lines(time.monotonic())
                        # Lines held back by the echo's rate limit are counted in the server's log
                        # within a flush interval, not only when the environment next prints or ends.
                        for pipe in list(self._pipes.values()):
                            self._echo_suppressed(pipe)
                        next_flush = time.monotonic() + self.flush_interval_s
                    self._flush()
                    if asked > self._sync_done:
                        with self._synced:
                            self._sync_done = asked
                            self._synced.notify_all()
                self._maybe_prune()
            except Exception:  # the logs must never take the server down, nor stop for good
                log.exception("log collection failed; retrying")
                time.sleep(self.flush_interval_s)
        self._final()

    def _final(self) -> None:
        self._take_inbox()
        for pipe in list(self._pipes.values()):
            with contextlib.suppress(OSError):
                self._read(pipe)
        for pipe in list(self._pipes.values()):
            self._end_partial(pipe)
            self._close_pipe(pipe)
        try:
            self._flush()
        except Exception:
            log.exception("could not write the last log events")

    def _take_inbox(self) -> None:
        while self._inbox:
            item = self._inbox.popleft()
            if isinstance(item, _Pipe):
                self._pipes[item.fd] = item
                self._selector.register(item.fd, selectors.EVENT_READ, None)
                self._read(item)  # what it holds already is as old as the wake-up that brought it
            elif isinstance(item, NewStream):
                self._streams.append(item)
            else:
                self._add(item)

    def _read(self, pipe: _Pipe) -> None:
        """What the pipe holds, up to ``READS_PER_ROUND`` chunks: a pipe that never runs dry (a
        model printing in a loop) must not keep the thread from the others and from writing."""
        for _ in range(READS_PER_ROUND):
            try:
                data = os.read(pipe.fd, READ_CHUNK)
            except BlockingIOError:
                return
            if not data:  # every copy of the write end is closed: the environment is gone
                self._end_partial(pipe)
                self._echo_suppressed(pipe)
                self._close_pipe(pipe)
                return
            self._lines(pipe, data)
            if len(data) < READ_CHUNK:
                return

    def _lines(self, pipe: _Pipe, data: bytes) -> None:
        if pipe.partial:
            data = bytes(pipe.partial) + data
            pipe.partial.clear()
        lines = data.split(b"\n")
        rest = lines.pop()
        if rest:
            pipe.partial += rest
            pipe.partial_since = time.monotonic()
            if len(pipe.partial) >= MAX_MESSAGE_BYTES:
                lines.append(bytes(pipe.partial))
                pipe.partial.clear()
        now = self.clock()
        echoed: list[str] = []
        for raw in lines:
            for message in _messages(raw):
                self._add(Event(pipe.group, pipe.stream, now, message))
                if self.echo is not None:
                    self._echo_line(pipe, message, echoed)
        if echoed and self.echo is not None:
            self._write_echo("".join(echoed))

    def _add(self, event: Event) -> None:
        self._events.append(event)
        self._pending_bytes += len(event.message)

    def _end_partial(self, pipe: _Pipe) -> None:
        if pipe.partial:
            self._lines(pipe, b"\n")

    def _flush_partial_lines(self, now: float) -> None:
        for pipe in self._pipes.values():
            if pipe.partial and now - pipe.partial_since >= PARTIAL_LINE_S:
                self._lines(pipe, b"\n")

    def _close_pipe(self, pipe: _Pipe) -> None:
        self._pipes.pop(pipe.fd, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(pipe.fd)
        with contextlib.suppress(OSError):
            os.close(pipe.fd)

    def _flush(self) -> None:
        if not self._streams and not self._events:
            return
        streams, self._streams = self._streams, []
        events, self._events = self._events, []
        self._pending_bytes = 0
        try:
            self.writer.write(streams, events, self.clock())
        except Exception:
            # Kept for the next try, unless they pile up past what memory should hold.
            if sum(len(e.message) for e in events) < 4 * MAX_PENDING_BYTES:
                self._streams[:0] = streams
                self._events[:0] = events
                self._pending_bytes += sum(len(e.message) for e in events)
            raise

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < PRUNE_INTERVAL_S:
            return
        self._last_prune = now
        self._flush()
        live = {(p.group, p.stream) for p in self._pipes.values()}
        self.writer.prune(self.clock(), live)

    # --- echo to the server's own output ------------------------------------------------------

    def _echo_line(self, pipe: _Pipe, message: str, out: list[str]) -> None:
        now = time.monotonic()
        pipe.tokens = min(ECHO_BURST, pipe.tokens + (now - pipe.refilled) * ECHO_RATE)
        pipe.refilled = now
        if pipe.tokens < 1:
            pipe.unechoed += 1
            return
        if pipe.unechoed:
            out.append(self._suppressed_line(pipe))
        pipe.tokens -= 1
        out.append(f"{pipe.label} | {message}\n")

    def _echo_suppressed(self, pipe: _Pipe) -> None:
        if pipe.unechoed and self.echo is not None:
            self._write_echo(self._suppressed_line(pipe))

    def _suppressed_line(self, pipe: _Pipe) -> str:
        count, pipe.unechoed = pipe.unechoed, 0
        return (
            f"{pipe.label} | ({count:,} lines not shown here to keep the server's log small; "
            f"they are in log group {pipe.group})\n"
        )

    def _write_echo(self, text: str) -> None:
        assert self.echo is not None
        try:
            self.echo.write(text)
            self.echo.flush()
        except (OSError, ValueError):
            self.echo = None  # the server's output is gone (closed terminal): keep collecting


def _messages(raw: bytes) -> list[str]:
    """One line of output as events: without its line ending, split at CloudWatch's event size;
    an empty line is no event."""
    line = raw.rstrip(b"\r")
    if not line:
        return []
    if len(line) <= MAX_MESSAGE_BYTES:
        return [line.decode("utf-8", "replace")]
    return [
        line[i : i + MAX_MESSAGE_BYTES].decode("utf-8", "replace")
        for i in range(0, len(line), MAX_MESSAGE_BYTES)
    ]


def default_echo() -> TextIO:
    """The server's own output, where workers wrote before their output was collected."""
    return sys.stderr
