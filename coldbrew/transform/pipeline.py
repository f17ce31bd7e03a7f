"""A job's data path for one object: decompress, split into records, filter, batch; then the
model's answers joined, filtered and assembled into the object's output.

The record and filter rules themselves (SageMaker's) are in ``records`` and ``filters``; this module
strings them together for one job and keeps, per batch, what its output needs (the input records a
join puts back).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from coldbrew.serving.targets import S3Url
from coldbrew.transform import filters, records
from coldbrew.transform.spec import ExecutionParameters, TransformJobSpec


class PipelineError(Exception):
    """An object's data cannot be processed; ``str()`` says why, for the job's FailureReason."""


@dataclass(frozen=True)
class Batch:
    payload: bytes
    count: int
    first: int
    """Index in its object of its first record."""
    inputs: tuple[bytes, ...] | None = None
    """Its input records as read (before the input filter), when the output needs them back."""

    def describe(self) -> str:
        if self.count == 1:
            return f"record {self.first + 1}"
        return f"records {self.first + 1}-{self.first + self.count}"


def validate_data_processing(spec: TransformJobSpec) -> None:
    """ValueError naming what is wrong with the request's DataProcessing."""
    filters.RecordProcessing.from_request(spec.data_processing, spec.content_type, spec.accept)


class Pipeline:
    def __init__(self, spec: TransformJobSpec, parameters: ExecutionParameters) -> None:
        self.spec = spec
        self.parameters = parameters
        self.processing = filters.RecordProcessing.from_request(
            spec.data_processing, spec.content_type, spec.accept
        )

    def batches(self, stream: BinaryIO, url: S3Url) -> Iterator[Batch]:
        """Blocking (runs on an I/O thread, a chunk at a time): the object's batches in order."""
        spec, limit = self.spec, self.parameters.max_payload_bytes
        keep = self.processing.needs_records_back()
        raw: deque[bytes] = deque()

        def filtered() -> Iterator[bytes]:
            source = records.split_records(
                records.open_decompressed(stream, spec.compression), spec.split_type, limit
            )
            for record in source:
                if keep:
                    raw.append(record)
                yield self.processing.filter_input(record)

        strategy = self.parameters.batch_strategy
        first = 0
        try:
            if self._plain_lines():
                source = records.line_batches(records.open_decompressed(stream, spec.compression), limit)
            else:
                source = records.batch_payloads(filtered(), strategy, spec.split_type, limit)
            for batch in source:
                inputs = tuple(raw.popleft() for _ in range(batch.count)) if keep else None
                yield Batch(batch.payload, batch.count, first, inputs)
                first += batch.count
        except (records.TransformInputError, filters.TransformOutputError, ValueError) as e:
            raise PipelineError(f"{url}: {_message(e)}") from None

    def _plain_lines(self) -> bool:
        """MultiRecord lines that go to the model as they are: batched by cutting the object's
        bytes, not line by line."""
        return (
            self.parameters.batch_strategy == "MultiRecord"
            and self.spec.split_type == "Line"
            and self.processing.input_filter.identity
            and not self.processing.needs_records_back()
        )

    def assemble(self, batches: list[Batch], outputs: list[bytes]) -> bytes:
        """The object's output from its batches' answers, in input order."""
        pieces: list[bytes] = []
        try:
            for batch, output in zip(batches, outputs, strict=True):
                if batch.inputs is None:
                    pieces.append(output)
                    continue
                pieces.extend(
                    self.processing.process_output(list(batch.inputs), output, self.spec.split_type)
                )
            return b"".join(records.assemble(pieces, self.spec.assemble_with))
        except (filters.TransformOutputError, ValueError) as e:
            raise PipelineError(_message(e)) from None


def _message(e: Exception) -> str:
    return str(getattr(e, "message", None) or e)
