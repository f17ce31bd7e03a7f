"""Splitting objects into records and records into payloads (coldbrew.transform.records), on the
diabetes data as CSV, gzip made by the gzip module, and RecordIO made by an encoder written here
from MXNet's format description."""

from __future__ import annotations

import gzip
import io
import struct
from collections.abc import Callable
from typing import BinaryIO, cast

import pytest
from sklearn.datasets import load_diabetes

from coldbrew.transform import records
from coldbrew.transform.records import Batch, TransformInputError

MAGIC = 0xCED7230A


@pytest.fixture(scope="module")
def diabetes_lines() -> list[bytes]:
    data = load_diabetes()
    return [
        ",".join(repr(float(v)) for v in (target, *row)).encode()
        for row, target in zip(data.data, data.target, strict=True)
    ]


class Trickle(io.RawIOBase):
    """A stream that answers every read with at most ``step`` bytes, as HTTP bodies and gzip
    members may, and counts what it has handed out."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__()
        self._data = data
        self._step = step
        self.position = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        size = len(self._data) if size is None or size < 0 else size
        chunk = self._data[self.position : self.position + min(size, self._step)]
        self.position += len(chunk)
        return chunk

    def binary(self) -> BinaryIO:
        return cast(BinaryIO, self)


def stream(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


# --- RecordIO, written the way MXNet's RecordIOWriter writes it ---------------------------------


def recordio(data: bytes) -> bytes:
    """One record: split where the magic number stands at a 4-byte boundary (flags 1, 2..., 3),
    else whole (flag 0); each part's data padded with zeros to 4 bytes."""
    magic = struct.pack("<I", MAGIC)
    cuts = [i for i in range(0, len(data) // 4 * 4, 4) if data[i : i + 4] == magic]
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(data[start:cut])
        start = cut + 4
    pieces.append(data[start:])
    out = b""
    for n, piece in enumerate(pieces):
        if len(pieces) == 1:
            flag = 0
        else:
            flag = 1 if n == 0 else 3 if n == len(pieces) - 1 else 2
        out += struct.pack("<II", MAGIC, flag << 29 | len(piece)) + piece + b"\0" * (-len(piece) % 4)
    return out


def test_the_encoder_here_agrees_with_the_format() -> None:
    # 5 bytes of data: header, data, 3 bytes of padding.
    assert recordio(b"hello") == struct.pack("<II", MAGIC, 5) + b"hello\0\0\0"
    # The magic inside the data, aligned: two parts, flags 1 and 3, the magic itself dropped.
    split = recordio(b"abcd" + struct.pack("<I", MAGIC) + b"ef")
    assert (
        split
        == struct.pack("<II", MAGIC, 1 << 29 | 4)
        + b"abcd"
        + struct.pack("<II", MAGIC, 3 << 29 | 2)
        + b"ef\0\0"
    )


# --- SplitType Line -----------------------------------------------------------------------------


def test_line_split_yields_each_csv_row_without_its_newline(diabetes_lines: list[bytes]) -> None:
    body = b"".join(line + b"\n" for line in diabetes_lines)
    assert list(records.split_records(stream(body), "Line", 6 * records.MiB)) == diabetes_lines
    assert len(diabetes_lines) == 442


def test_line_split_across_short_reads_matches_one_read(diabetes_lines: list[bytes]) -> None:
    body = b"\r\n".join(diabetes_lines)  # CRLF, and no newline after the last line
    trickle = Trickle(body, step=7)
    assert list(records.split_records(trickle.binary(), "Line", 1000)) == diabetes_lines


def test_line_split_drops_carriage_returns_and_empty_lines() -> None:
    body = b"a,1\r\n\nb,2\n\r\n\nc,3\n\n"
    assert list(records.split_records(stream(body), "Line", 100)) == [b"a,1", b"b,2", b"c,3"]


def test_the_newline_that_ends_a_file_makes_no_record() -> None:
    assert list(records.split_records(stream(b"x\ny\n"), "Line", 100)) == [b"x", b"y"]
    assert list(records.split_records(stream(b""), "Line", 100)) == []


def test_a_line_at_the_limit_passes_and_one_byte_more_fails() -> None:
    assert list(records.split_records(stream(b"12345\r\n6"), "Line", 5)) == [b"12345", b"6"]
    with pytest.raises(TransformInputError) as caught:
        list(records.split_records(stream(b"1\n123456\n"), "Line", 5))
    assert "line 2 is 6 bytes" in caught.value.message
    assert "MaxPayloadInMB" in caught.value.message


def test_an_endless_line_fails_without_reading_the_whole_object() -> None:
    limit = 3 * records.MiB
    trickle = Trickle(b"x" * (50 * records.MiB), step=records.MiB)
    with pytest.raises(TransformInputError, match="over the MaxPayloadInMB limit of 3 MB"):
        list(records.split_records(trickle.binary(), "Line", limit))
    assert trickle.position <= limit + 2 * records.MiB


def test_line_split_streams_a_record_at_a_time() -> None:
    line = b"0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0"
    trickle = Trickle(b"".join(line + b"\n" for _ in range(200_000)), step=64 * 1024)  # about 8 MB
    split = records.split_records(trickle.binary(), "Line", records.MiB)
    assert next(split) == line
    assert trickle.position <= records.MiB  # one read chunk, not the object


# --- SplitType None -----------------------------------------------------------------------------


def test_split_none_makes_the_object_one_record(diabetes_lines: list[bytes]) -> None:
    body = b"\n".join(diabetes_lines) + b"\n"
    assert list(records.split_records(stream(body), "None", len(body))) == [body]


def test_split_none_of_an_object_over_the_limit_fails() -> None:
    with pytest.raises(TransformInputError) as caught:
        list(records.split_records(stream(b"x" * 101), "None", 100))
    assert "MaxPayloadInMB limit of" in caught.value.message and "(100 bytes)" in caught.value.message
    assert "SplitType" in caught.value.message


def test_an_empty_object_has_no_records() -> None:
    assert list(records.split_records(stream(b""), "None", 100)) == []


# --- SplitType RecordIO -------------------------------------------------------------------------


def test_recordio_split_yields_each_record_still_framed(diabetes_lines: list[bytes]) -> None:
    framed = [recordio(line) for line in diabetes_lines[:50]]
    assert list(records.split_records(stream(b"".join(framed)), "RecordIO", 1000)) == framed


def test_a_record_written_in_parts_is_one_record_of_all_its_parts() -> None:
    magic = struct.pack("<I", MAGIC)
    data = [b"head" + magic + b"middle!!" + magic + b"tail", b"plain", magic, b""]
    framed = [recordio(d) for d in data]
    assert framed[0].count(magic) == 3  # the writer made three parts of it
    split = list(records.split_records(stream(b"".join(framed)), "RecordIO", 1000))
    assert split == framed
    assert [records.recordio_data(record) for record in split] == data


def test_recordio_across_short_reads() -> None:
    data = [bytes(range(n)) for n in range(1, 40)]
    trickle = Trickle(b"".join(recordio(d) for d in data), step=3)
    split = records.split_records(trickle.binary(), "RecordIO", 1000)
    assert [records.recordio_data(record) for record in split] == data


def test_recordio_with_a_wrong_magic_number_fails_naming_the_record() -> None:
    body = recordio(b"good") + b"\x01\x02\x03\x04" + recordio(b"bad")[4:]
    with pytest.raises(TransformInputError) as caught:
        list(records.split_records(stream(body), "RecordIO", 1000))
    assert "RecordIO record 2, at byte 12" in caught.value.message
    assert "0x04030201" in caught.value.message


def test_truncated_recordio_fails() -> None:
    whole = recordio(b"some data here")
    for cut in (3, len(whole) - 2):
        with pytest.raises(TransformInputError, match="the object ends inside"):
            list(records.split_records(stream(recordio(b"first") + whole[:cut]), "RecordIO", 1000))


def test_a_part_out_of_sequence_fails() -> None:
    middle_first = struct.pack("<II", MAGIC, 2 << 29 | 4) + b"abcd"
    with pytest.raises(TransformInputError, match="continuation flag 2 is out of sequence"):
        list(records.split_records(stream(middle_first), "RecordIO", 1000))


def test_an_oversized_recordio_record_fails_on_its_header_before_its_data_is_read() -> None:
    # The header claims 50 MB that are not there: the limit must be what fails, not the short read.
    header = struct.pack("<II", MAGIC, 50 * records.MiB)
    with pytest.raises(TransformInputError, match="RecordIO record 1 is over the MaxPayloadInMB limit"):
        list(records.split_records(stream(header), "RecordIO", 6 * records.MiB))


# --- CompressionType ----------------------------------------------------------------------------


def test_gzip_is_decompressed_as_it_is_read(diabetes_lines: list[bytes]) -> None:
    body = b"\n".join(diabetes_lines) + b"\n"
    plain = records.open_decompressed(stream(gzip.compress(body)), "Gzip")
    assert list(records.split_records(plain, "Line", 1000)) == diabetes_lines


def test_concatenated_gzip_members_are_one_object() -> None:
    body = gzip.compress(b"a\nb\n") + gzip.compress(b"c\n")
    plain = records.open_decompressed(Trickle(body, step=5).binary(), "Gzip")
    assert list(records.split_records(plain, "Line", 10)) == [b"a", b"b", b"c"]


def test_gzipped_recordio(diabetes_lines: list[bytes]) -> None:
    framed = [recordio(line) for line in diabetes_lines]
    plain = records.open_decompressed(stream(gzip.compress(b"".join(framed))), "Gzip")
    assert list(records.split_records(plain, "RecordIO", 1000)) == framed


def test_compression_none_passes_the_stream_through() -> None:
    body = stream(b"x")
    assert records.open_decompressed(body, "None") is body


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda z: b"plain text, not gzip", id="not-gzip"),
        pytest.param(lambda z: z[: len(z) // 2], id="truncated"),
        pytest.param(lambda z: z[:20] + bytes(b ^ 0xFF for b in z[20:40]) + z[40:], id="corrupt-data"),
        pytest.param(lambda z: z[:-8] + bytes(b ^ 0xFF for b in z[-8:-4]) + z[-4:], id="bad-crc"),
    ],
)
def test_bad_gzip_is_a_transform_input_error(
    diabetes_lines: list[bytes], damage: Callable[[bytes], bytes]
) -> None:
    body = damage(gzip.compress(b"\n".join(diabetes_lines)))
    with pytest.raises(TransformInputError) as caught:
        list(records.split_records(records.open_decompressed(stream(body), "Gzip"), "Line", 10_000))
    assert caught.value.message.startswith("the object is not valid gzip data (")
    assert "CompressionType" in caught.value.message


# --- BatchStrategy ------------------------------------------------------------------------------


def test_single_record_sends_each_line_with_its_newline(diabetes_lines: list[bytes]) -> None:
    batches = list(records.batch_payloads(diabetes_lines, "SingleRecord", "Line", 6 * records.MiB))
    assert batches == [Batch(line + b"\n", 1) for line in diabetes_lines]


def test_multi_record_packs_lines_up_to_the_limit_exactly(diabetes_lines: list[bytes]) -> None:
    rows = diabetes_lines[:10]
    exact = sum(len(row) + 1 for row in rows[:4])  # four lines and their newlines, to the byte
    batches = list(records.batch_payloads(rows, "MultiRecord", "Line", exact))
    assert batches[0] == Batch(b"".join(row + b"\n" for row in rows[:4]), 4)
    assert len(batches[0].payload) == exact
    # Every payload within the limit, every record once, in order.
    assert all(len(batch.payload) <= exact for batch in batches)
    assert b"".join(batch.payload for batch in batches) == b"".join(row + b"\n" for row in rows)
    assert sum(batch.count for batch in batches) == 10
    # One byte less and the fourth line goes to the next payload.
    assert next(records.batch_payloads(rows, "MultiRecord", "Line", exact - 1)).count == 3


def test_multi_record_with_a_large_limit_sends_the_object_in_one_payload(diabetes_lines: list[bytes]) -> None:
    batches = list(records.batch_payloads(diabetes_lines, "MultiRecord", "Line", 6 * records.MiB))
    assert batches == [Batch(b"\n".join(diabetes_lines) + b"\n", 442)]


def _line_batches_both_ways(data: bytes, limit: int) -> tuple[list[Batch], list[Batch]]:
    by_line = records.batch_payloads(
        records.split_records(io.BytesIO(data), "Line", limit), "MultiRecord", "Line", limit
    )
    return list(by_line), list(records.line_batches(io.BytesIO(data), limit))


def test_line_batches_cut_from_the_bytes_are_the_line_by_line_batches(diabetes_lines: list[bytes]) -> None:
    import random

    chooser = random.Random(13)
    data = b"\n".join(diabetes_lines) + b"\n"
    for limit in (max(map(len, diabetes_lines)) + 1, 1000, 4096, 65536, 6 * records.MiB):
        for cut in (data, data[:-1], data[: chooser.randrange(len(data))]):
            by_line, by_bytes = _line_batches_both_ways(cut, limit)
            assert by_bytes == by_line, (limit, len(cut))
    # Objects larger than a read chunk, cut within a line.
    big = data * 150  # about 14 MB
    by_line, by_bytes = _line_batches_both_ways(big, 6 * records.MiB)
    assert by_bytes == by_line and len(by_bytes) == 3


def test_line_batches_drop_blank_lines_and_crs_as_the_split_does() -> None:
    data = b"\n1,2\r\n\n3,4\n\n\n5,6"
    by_line, by_bytes = _line_batches_both_ways(data, 100)
    assert by_bytes == by_line == [Batch(b"1,2\n3,4\n5,6\n", 3)]
    assert list(records.line_batches(io.BytesIO(b"\n\n\n"), 100)) == []
    assert list(records.line_batches(io.BytesIO(b""), 100)) == []


def test_line_batches_refuse_a_line_over_the_limit_with_its_number() -> None:
    with pytest.raises(TransformInputError, match="line 3 is more than 10 bytes, over the MaxPayloadInMB"):
        list(records.line_batches(io.BytesIO(b"1\n2\n" + b"3" * 11 + b"\n4\n"), 10))


def test_a_record_larger_than_the_payload_limit_fails() -> None:
    with pytest.raises(TransformInputError) as caught:
        list(records.batch_payloads([b"ok", b"x" * 10], "MultiRecord", "Line", 10))
    assert caught.value.message.startswith("record 2 alone makes a payload of 11 bytes")
    assert "exceeds the MaxPayloadInMB limit of" in caught.value.message
    with pytest.raises(TransformInputError, match="record 1 alone makes a payload of 11 bytes"):
        list(records.batch_payloads([b"x" * 10], "SingleRecord", "Line", 10))


def test_a_limit_of_zero_means_100_mb() -> None:
    big = b"x" * (7 * records.MiB)
    assert list(records.batch_payloads([big, big], "MultiRecord", "Line", 0)) == [
        Batch(big + b"\n" + big + b"\n", 2)
    ]
    with pytest.raises(TransformInputError, match=r"limit of 100 MB \(104857600 bytes\)"):
        list(records.batch_payloads([b"x" * (100 * records.MiB)], "SingleRecord", "Line", 0))


def test_split_none_is_one_record_per_payload_either_way() -> None:
    objects = [b"a\nb\n", b"c\n"]
    for strategy in ("SingleRecord", "MultiRecord"):
        assert list(records.batch_payloads(objects, strategy, "None", 100)) == [
            Batch(b"a\nb\n", 1),
            Batch(b"c\n", 1),
        ]


def test_recordio_multi_record_payloads_are_framed_records_back_to_back() -> None:
    data = [b"one", b"two!", b"three", b"four", b"five5"]
    framed = [recordio(d) for d in data]
    limit = len(framed[0]) + len(framed[1]) + len(framed[2])
    batches = list(records.batch_payloads(framed, "MultiRecord", "RecordIO", limit))
    assert batches == [Batch(b"".join(framed[:3]), 3), Batch(b"".join(framed[3:]), 2)]


def test_recordio_single_record_payloads_are_the_data_without_framing() -> None:
    magic = struct.pack("<I", MAGIC)
    data = [b"one", b"with" + magic + b"magic", b"four"]
    batches = records.batch_payloads([recordio(d) for d in data], "SingleRecord", "RecordIO", 100)
    assert list(batches) == [Batch(d, 1) for d in data]


def test_the_steps_stream_together(diabetes_lines: list[bytes]) -> None:
    body = gzip.compress(b"".join(line + b"\n" for line in diabetes_lines))
    limit = 2000
    split = records.split_records(records.open_decompressed(stream(body), "Gzip"), "Line", limit)
    batches = list(records.batch_payloads(split, "MultiRecord", "Line", limit))
    assert [line for batch in batches for line in batch.payload.splitlines()] == diabetes_lines
    assert len(batches) > 10
    # Each payload is within the limit, and full: the next record would not have fitted.
    for batch, following in zip(batches, batches[1:], strict=False):
        assert len(batch.payload) <= limit < len(batch.payload) + len(following.payload.split(b"\n")[0]) + 1


def test_unknown_parameters_are_value_errors() -> None:
    with pytest.raises(ValueError, match="CompressionType must be None or Gzip, not 'Zip'"):
        records.open_decompressed(stream(b""), "Zip")
    with pytest.raises(ValueError, match="SplitType must be"):
        records.split_records(stream(b""), "TFRecord", 10)
    with pytest.raises(ValueError, match="BatchStrategy must be"):
        records.batch_payloads([], "AllAtOnce", "Line", 10)


# --- AssembleWith -------------------------------------------------------------------------------


def test_assemble_none_concatenates_as_is() -> None:
    outputs = [b"0.5\n0.25\n", b"1.0", b"[1]"]
    assert b"".join(records.assemble(outputs, "None")) == b"0.5\n0.25\n1.0[1]"


def test_assemble_line_ends_each_output_with_one_newline() -> None:
    outputs = [b"0.5\n0.25\n", b"1.0", b"", b'{"a":1}']
    assert b"".join(records.assemble(outputs, "Line")) == b'0.5\n0.25\n1.0\n\n{"a":1}\n'
    with pytest.raises(ValueError, match="AssembleWith must be None or Line"):
        list(records.assemble(iter(outputs), "Newline"))
