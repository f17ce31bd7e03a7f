"""The capture writer: takes sampled invocations off the hot path and writes them to S3 in batches.

``offer`` runs on the event loop for each invocation of an endpoint that captures: it samples,
then appends a small event (references to the bodies, no copy) to a deque, which is atomic under
the GIL, so it takes no lock and does no I/O. A thread of the writer's own drains the deque every
``flush_interval_s`` (1 s), encodes the records (base64, JSON) and writes one JSON Lines file per
endpoint variant, destination and hour, so a SIGKILL loses at most the last second's records.

Memory is bounded: past ``max_buffered_bytes`` waiting to be written (S3 slower than the traffic,
or unreachable) new events are dropped and counted, never waited for; a file S3 refuses is
dropped and counted too, and logged. Invocations never wait on capture.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable

from coldbrew.capture.config import CaptureConfig
from coldbrew.capture.records import CaptureEvent, FileKey, record_line
from coldbrew.capture.sinks import NewFile, Sink

log = logging.getLogger("coldbrew.capture")

MiB = 1024 * 1024
FLUSH_INTERVAL_S = 1.0
MAX_BUFFERED_BYTES = 64 * MiB
FLUSH_BYTES = 8 * MiB
"""A buffer this large is flushed at once rather than at the next tick (bursts of big payloads)."""
_WARN_INTERVAL_S = 60.0


class CaptureWriter:
    def __init__(
        self,
        sink: Sink,
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
        flush_bytes: int = FLUSH_BYTES,
        seed: int | None = None,
    ) -> None:
        self.sink = sink
        self.flush_interval_s = flush_interval_s
        self.max_buffered_bytes = max_buffered_bytes
        self.flush_bytes = flush_bytes
        self._random: Callable[[], float] = random.Random(seed).random
        self._buffer: deque[tuple[CaptureEvent, int]] = deque()
        # Each counter has one writer thread, so no lock is needed: the event loop adds, the
        # writer's thread drains; the bytes waiting are their difference.
        self._added_bytes = 0
        self._drained_bytes = 0
        self.dropped_full = 0
        """Events dropped by ``offer`` because the buffer was full (event loop's counter)."""
        self.dropped_failed = 0
        """Records in files S3 refused (writer thread's counter)."""
        self.written = 0
        """Records written (writer thread's counter)."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_at = -_WARN_INTERVAL_S

    # --- the hot path (event loop) ---------------------------------------------------------------

    def offer(
        self,
        config: CaptureConfig,
        endpoint: str,
        variant: str,
        at: float,
        input_type: str,
        input_body: bytes,
        output_type: str,
        output_body: bytes,
        inference_id: str | None = None,
    ) -> None:
        """Capture one answered invocation if ``config`` samples it. Never blocks."""
        if not config.capturing:
            return
        percentage = config.sampling_percentage
        if percentage < 100 and self._random() * 100 >= percentage:
            return
        event = CaptureEvent(
            config, endpoint, variant, at, input_type, input_body, output_type, output_body, inference_id
        )
        size = event.size
        waiting = self._added_bytes - self._drained_bytes + size
        if waiting > self.max_buffered_bytes:
            self.dropped_full += 1
            return
        self._added_bytes += size
        self._buffer.append((event, size))
        if waiting > self.flush_bytes:
            self._wake.set()

    @property
    def dropped(self) -> int:
        return self.dropped_full + self.dropped_failed

    @property
    def buffered_bytes(self) -> int:
        return self._added_bytes - self._drained_bytes

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="coldbrew-capture", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread after a last flush (what was offered before is written)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        else:
            self.flush()

    def _run(self) -> None:
        # Ticks at a fixed rate (not interval after each flush), so no record waits much longer
        # than flush_interval_s however long the previous flush took.
        next_at = time.monotonic() + self.flush_interval_s
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_at - time.monotonic()))
            self._wake.clear()
            if time.monotonic() >= next_at:
                next_at += self.flush_interval_s
                next_at = max(next_at, time.monotonic())
            try:
                self.flush()
            except Exception:
                log.exception("a flush failed; its records are dropped")
        self.flush()

    # --- the writer's thread -------------------------------------------------------------------

    def flush(self) -> int:
        """Write what is buffered now; returns how many records were written. Call it from one
        thread at a time (the writer's own, or after it stopped)."""
        taken: list[tuple[CaptureEvent, int]] = []
        buffer = self._buffer
        for _ in range(len(buffer)):
            taken.append(buffer.popleft())
        if not taken:
            return 0
        groups: dict[FileKey, tuple[float, list[bytes]]] = {}
        for event, _ in taken:
            key = FileKey.of(event)
            group = groups.get(key)
            if group is None:
                groups[key] = (event.at, [record_line(event)])
            else:
                group[1].append(record_line(event))
        files: list[NewFile] = []
        counts: list[int] = []
        for key, (first_at, lines) in groups.items():
            files.append((key.bucket, key.object_key(first_at), b"".join(lines)))
            counts.append(len(lines))
        try:
            errors = self.sink.write_many(files)
        except Exception as e:  # an S3 we cannot reach at all
            errors = [f"{type(e).__name__}: {e}"] * len(files)
        written = 0
        for (bucket, object_key, _), count, error in zip(files, counts, errors, strict=True):
            if error is None:
                written += count
            else:
                self.dropped_failed += count
                self._warn(f"could not write s3://{bucket}/{object_key} ({count} records dropped): {error}")
        self.written += written
        self._drained_bytes += sum(size for _, size in taken)
        return written

    def _warn(self, message: str) -> None:
        # At most one warning a minute: an unreachable S3 would otherwise log every second.
        now = time.monotonic()
        if now - self._warned_at >= _WARN_INTERVAL_S:
            self._warned_at = now
            log.warning("%s; %d records dropped so far", message, self.dropped)
