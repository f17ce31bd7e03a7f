"""Input objects into records and records into request payloads, as SageMaker Batch Transform does.

Three steps on the way in, each streaming (no more than a read chunk and one record, or one
batch, of an object is held at a time):

- ``open_decompressed(stream, compression) -> BinaryIO``: CompressionType ``None`` or ``Gzip``.
- ``split_records(stream, split_type, max_record_bytes) -> Iterator[bytes]``: SplitType ``None``
  (the whole object is one record), ``Line`` or ``RecordIO``.
- ``batch_payloads(records, strategy, split_type, max_payload_bytes) -> Iterator[Batch]``:
  BatchStrategy ``SingleRecord`` or ``MultiRecord``, every payload within MaxPayloadInMB.

And one on the way out, ``assemble(outputs, assemble_with) -> Iterator[bytes]``: AssembleWith
``None`` or ``Line``. Data the job cannot use raises ``TransformInputError``; a parameter outside
SageMaker's enumerations raises ``ValueError`` (the API validates those first).

Where SageMaker's documentation is explicit this follows it; where it is silent the choice is
named here:

- Line: records are split on ``"\\n"``; a ``"\\r"`` before it goes too (CRLF files). Empty lines are
  not records: there is nothing to predict on, and the default decoders skip blank lines, which
  would leave a join one answer short. So the newline that ends a file makes no empty record.
- Line payloads end every record with ``"\\n"``, SingleRecord ones too: each payload is then the
  byte range of the input it came from, as the SageMaker SDK's local mode sends it.
- RecordIO (MXNet's framing: magic ``0xced7230a``, a length word whose top 3 bits are a
  continuation flag, data padded to 4 bytes): records are yielded with their headers and padding,
  a record written in parts as all its parts. A MultiRecord payload is framed records back to back;
  a SingleRecord payload is the record's data alone, since the API says padding "is removed if the
  value of BatchStrategy is set to SingleRecord" and "is not removed" for MultiRecord.
- A record or payload over the limit is an error, never truncated; the limit counts the bytes
  actually sent. MaxPayloadInMB=0 asks SageMaker for an unlimited payload sent chunked; coldbrew
  buffers payloads, so 0 means SageMaker's documented ceiling for the parameter, 100 MB.
- An empty object has no records: it makes no requests, and its output is empty.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

MiB = 1024 * 1024
MAX_PAYLOAD_BYTES = 100 * MiB
"""What a limit of 0 (MaxPayloadInMB=0) means here: SageMaker's ceiling for the parameter."""

SPLIT_TYPES = ("None", "Line", "RecordIO")
STRATEGIES = ("SingleRecord", "MultiRecord")

RECORDIO_MAGIC = 0xCED7230A
_HEADER = struct.Struct("<II")
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
_LENGTH_MASK = (1 << 29) - 1
# Continuation flags: MXNet's writer splits a record where its data holds the magic number at a
# 4-byte boundary, into a first part, middle parts and a last part.
_WHOLE, _FIRST, _MIDDLE, _LAST = 0, 1, 2, 3

_CHUNK = 1 * MiB


class TransformInputError(Exception):
    """An input object cannot be made into requests; ``message`` says why and what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Batch:
    """One request body and the number of records in it."""

    payload: bytes
    count: int


def effective_limit(max_bytes: int) -> int:
    """``max_bytes``, with 0 (MaxPayloadInMB=0, "no limit") read as the 100 MB ceiling."""
    return max_bytes if max_bytes > 0 else MAX_PAYLOAD_BYTES


# --- decompression ------------------------------------------------------------------------------


def open_decompressed(stream: BinaryIO, compression: str) -> BinaryIO:
    """``stream``'s uncompressed bytes, decompressed as they are read.

    A stream that is not gzip, or is corrupt or cut short, raises TransformInputError from the
    read that finds it.
    """
    if compression == "None":
        return stream
    if compression == "Gzip":
        return cast(BinaryIO, io.BufferedReader(_GunzipRaw(stream), buffer_size=_CHUNK))
    raise ValueError(f"CompressionType must be None or Gzip, not {compression!r}")


class _GunzipRaw(io.RawIOBase):
    """A gzip.GzipFile whose failures (OSError, EOFError and zlib.error, by where they are found)
    are one TransformInputError that says what to check."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._gzip = gzip.GzipFile(fileobj=stream, mode="rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return self._gzip.readinto(buffer)
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise TransformInputError(
                f"the object is not valid gzip data ({e}): upload it gzip-compressed, or set "
                "CompressionType to None"
            ) from None

    def close(self) -> None:
        self._gzip.close()
        super().close()


# --- splitting ----------------------------------------------------------------------------------


def split_records(stream: BinaryIO, split_type: str, max_record_bytes: int) -> Iterator[bytes]:
    """The records of an uncompressed object, in order, none over ``max_record_bytes`` (0: 100 MB).

    ``Line`` records are without their line ending; ``RecordIO`` records are still framed.
    """
    limit = effective_limit(max_record_bytes)
    if split_type == "None":
        return _whole(stream, limit)
    if split_type == "Line":
        return _lines(stream, limit)
    if split_type == "RecordIO":
        return _recordio(stream, limit)
    raise ValueError(f"SplitType must be one of {', '.join(SPLIT_TYPES)}, not {split_type!r}")


def _whole(stream: BinaryIO, limit: int) -> Iterator[bytes]:
    # One byte past the limit is enough to know the object is too large, and no more is held.
    data = _read_exact(stream, limit + 1)
    if len(data) > limit:
        raise TransformInputError(
            f"the object is larger than the MaxPayloadInMB limit of {_mb(limit)}, and SplitType None "
            "sends it whole: set SplitType to Line or RecordIO to split it into records, or raise "
            "MaxPayloadInMB"
        )
    if data:
        yield data


def _lines(stream: BinaryIO, limit: int) -> Iterator[bytes]:
    tail = b""
    number = 0  # of the line, counting empty ones, so that a message points into the file
    while chunk := stream.read(_CHUNK):
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        for line in lines:
            number += 1
            line = line.removesuffix(b"\r")
            if line:
                _check_line(line, limit, number)
                yield line
        # The unfinished line can lose one "\r" yet; past that it can only grow.
        if len(tail) > limit + 1:
            _check_line(tail, limit, number + 1)
    tail = tail.removesuffix(b"\r")
    if tail:
        _check_line(tail, limit, number + 1)
        yield tail


def _check_line(line: bytes, limit: int, number: int) -> None:
    if len(line) > limit:
        raise TransformInputError(
            f"line {number} is {'more than ' if len(line) > limit + 1 else ''}{len(line)} bytes, over "
            f"the MaxPayloadInMB limit of {_mb(limit)}: raise MaxPayloadInMB, or make the lines shorter"
        )


def _recordio(stream: BinaryIO, limit: int) -> Iterator[bytes]:
    number = 0
    offset = 0  # in the uncompressed object, of the record being read
    while header := _read_exact(stream, _HEADER.size):
        number += 1
        frames: list[bytes] = []
        size = 0
        while True:
            if len(header) < _HEADER.size:
                raise _malformed(number, offset, "the object ends inside a record header")
            magic, word = _HEADER.unpack(header)
            if magic != RECORDIO_MAGIC:
                raise _malformed(number, offset, f"a header starts with 0x{magic:08x}, not the magic number")
            flag, length = word >> 29, word & _LENGTH_MASK
            if (not frames and flag not in (_WHOLE, _FIRST)) or (frames and flag not in (_MIDDLE, _LAST)):
                raise _malformed(number, offset, f"continuation flag {flag} is out of sequence")
            padded = _padded(length)
            size += _HEADER.size + padded
            # Checked on the header, before the data is read, so an oversized record is never held.
            if size > limit:
                raise TransformInputError(
                    f"RecordIO record {number} is over the MaxPayloadInMB limit of {_mb(limit)}: raise "
                    "MaxPayloadInMB, or make the records smaller"
                )
            data = _read_exact(stream, padded)
            if len(data) < padded:
                raise _malformed(number, offset, "the object ends inside the record's data")
            frames.append(header + data)
            if flag in (_WHOLE, _LAST):
                break
            header = _read_exact(stream, _HEADER.size)
        offset += size
        yield b"".join(frames)


def _malformed(number: int, offset: int, detail: str) -> TransformInputError:
    return TransformInputError(
        f"RecordIO record {number}, at byte {offset} of the uncompressed object, is malformed: {detail}. "
        "Check that the object is MXNet RecordIO, or choose another SplitType"
    )


def recordio_data(record: bytes) -> bytes:
    """A framed RecordIO record's data, without headers and padding; the parts of a record written
    in parts are joined with the magic number between them, where the writer split it out."""
    parts: list[bytes] = []
    position = 0
    while position < len(record):
        _, word = _HEADER.unpack_from(record, position)
        length = word & _LENGTH_MASK
        start = position + _HEADER.size
        parts.append(record[start : start + length])
        position = start + _padded(length)
    return _MAGIC_BYTES.join(parts)


def _padded(length: int) -> int:
    return (length + 3) & ~3


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes, fewer only at the end of the stream: read() may return less than asked
    (an HTTP body, a gzip member's end) without being at the end."""
    parts: list[bytes] = []
    got = 0
    while got < size:
        chunk = stream.read(min(size - got, _CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


# --- batching -----------------------------------------------------------------------------------


def batch_payloads(
    records: Iterable[bytes], strategy: str, split_type: str, max_payload_bytes: int
) -> Iterator[Batch]:
    """Request payloads of ``records`` (as ``split_records`` yields them), in order.

    SingleRecord: one record per payload. MultiRecord: as many consecutive records as fit in
    ``max_payload_bytes`` (0: 100 MB), a payload of exactly the limit included. With SplitType None
    there is one record per object, so one per payload either way. A record whose payload alone
    is over the limit raises TransformInputError.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"BatchStrategy must be SingleRecord or MultiRecord, not {strategy!r}")
    if split_type not in SPLIT_TYPES:
        raise ValueError(f"SplitType must be one of {', '.join(SPLIT_TYPES)}, not {split_type!r}")
    limit = effective_limit(max_payload_bytes)
    if strategy == "SingleRecord" or split_type == "None":
        return _single(records, split_type, limit)
    return _multi(records, split_type == "Line", limit)


def line_batches(stream: BinaryIO, max_payload_bytes: int) -> Iterator[Batch]:
    """MultiRecord payloads of an uncompressed Line object, straight from its bytes: what
    ``batch_payloads(split_records(stream, "Line", limit), "MultiRecord", "Line", limit)`` yields
    for input without blank lines or CRLF endings, without a Python step per line (a million
    lines cost seconds that way; cut at the last newline that fits, a batch costs microseconds).

    Blank lines and ``"\r"`` are dropped as ``split_records`` drops them, from the batch that
    holds them, which then is that much smaller than the limit allows.
    """
    limit = effective_limit(max_payload_bytes)
    pending: list[bytes] = []
    held = 0
    number = 0  # lines before the buffer, counting blank ones, so that a message points into the file
    eof = False
    while True:
        while not eof and held <= limit:
            chunk = stream.read(max(_CHUNK, limit + 1 - held))
            if chunk:
                pending.append(chunk)
                held += len(chunk)
            else:
                eof = True
        buffer = b"".join(pending)
        if not buffer:
            return
        if eof and not buffer.endswith(b"\n"):
            buffer += b"\n"  # the last line, unfinished, takes its newline back as a record
        if eof and len(buffer) <= limit:
            payload, rest = buffer, b""
        else:
            cut = buffer.rfind(b"\n", 0, limit) + 1
            if cut == 0:  # its first line does not fit, whatever else the buffer holds
                raise TransformInputError(
                    f"line {number + 1} is more than {limit} bytes, over the MaxPayloadInMB limit of "
                    f"{_mb(limit)}: raise MaxPayloadInMB, or make the lines shorter"
                )
            payload, rest = buffer[:cut], buffer[cut:]
        number += payload.count(b"\n")
        pending, held = ([rest], len(rest)) if rest else ([], 0)
        if payload.startswith(b"\n") or b"\n\n" in payload or b"\r" in payload:
            lines = (line.removesuffix(b"\r") for line in payload.split(b"\n"))
            payload = b"".join(line + b"\n" for line in lines if line)
        if payload:
            yield Batch(payload, payload.count(b"\n"))


def _single(records: Iterable[bytes], split_type: str, limit: int) -> Iterator[Batch]:
    for number, record in enumerate(records, start=1):
        if split_type == "Line":
            payload = record + b"\n"
        elif split_type == "RecordIO":
            payload = recordio_data(record)
        else:
            payload = record
        _check_payload(len(payload), limit, number)
        yield Batch(payload, 1)


def _multi(records: Iterable[bytes], lines: bool, limit: int) -> Iterator[Batch]:
    # Lines each take their "\n" back; RecordIO records are framed already.
    extra = 1 if lines else 0
    pending: list[bytes] = []
    size = 0
    for number, record in enumerate(records, start=1):
        needed = len(record) + extra
        _check_payload(needed, limit, number)
        if pending and size + needed > limit:
            yield _joined(pending, lines)
            pending, size = [], 0
        pending.append(record)
        size += needed
    if pending:
        yield _joined(pending, lines)


def _joined(records: list[bytes], lines: bool) -> Batch:
    payload = b"\n".join(records) + b"\n" if lines else b"".join(records)
    return Batch(payload, len(records))


def _check_payload(size: int, limit: int, number: int) -> None:
    if size > limit:
        raise TransformInputError(
            f"record {number} alone makes a payload of {size} bytes, which exceeds the MaxPayloadInMB "
            f"limit of {_mb(limit)}: raise MaxPayloadInMB, or make the records smaller"
        )


def _mb(limit: int) -> str:
    return f"{limit / MiB:g} MB ({limit} bytes)"


# --- assembly -----------------------------------------------------------------------------------


def assemble(outputs: Iterable[bytes], assemble_with: str) -> Iterator[bytes]:
    """The pieces of an object's output, in order: one per output (a batch's answer, or one
    record's joined or filtered output).

    ``None`` passes the outputs as they are, to be concatenated. ``Line`` ends each with ``"\\n"``
    (the API: "add a newline character at the end of every transformed record"); an output that
    already ends with one, as the CSV and JSON Lines encoders' answers do, gets no second, so that
    MultiRecord batches leave no blank lines between them.
    """
    if assemble_with == "None":
        return iter(outputs)
    if assemble_with == "Line":
        return (output if output.endswith(b"\n") else output + b"\n" for output in outputs)
    raise ValueError(f"AssembleWith must be None or Line, not {assemble_with!r}")
