"""DataProcessing as SageMaker Batch Transform applies it: InputFilter, JoinSource and OutputFilter.

Public API (all pure, no I/O):

- ``RecordProcessing.from_request(data_processing, content_type, accept) -> RecordProcessing``:
  the request's ``DataProcessing`` dict (or None) with TransformInput.ContentType and
  TransformOutput.Accept. Raises ValueError naming what is wrong: a JSONPath that does not parse
  or uses an operator outside SageMaker's subset, a name-based path on CSV, a JoinSource other
  than Input or None, or filters on a content type other than text/csv, application/json and
  application/jsonlines.
- ``RecordProcessing.filter_input(record: bytes) -> bytes``: one input record as it is sent to the
  model. The identity (``$``) returns the record untouched.
- ``RecordProcessing.needs_records_back() -> bool``: whether the answers must be split into one per
  input record (JoinSource Input, or an OutputFilter other than ``$``); the caller then keeps each
  batch's input records as read, before the input filter.
- ``RecordProcessing.process_output(inputs: list[bytes], output: bytes, split_type: str) ->
  list[bytes]``: a batch's answer as one piece per input row, joined and filtered, without line
  endings (``records.assemble`` adds them for AssembleWith Line). Answers that do not split into one
  per input row raise TransformOutputError.
- ``JsonPathFilter.compile(member, expression)`` and ``.select(document)``: one expression.

SageMaker's rules, from "Associate Prediction Results with Input Records" and the DataProcessing
API reference:

- The JSONPath subset: ``$``, ``.name``, ``*``, ``['name',...]``, ``[index,...]`` (negative from the
  end), ``[start:end]``, and unions of indexes and slices such as ``$[0,5:]``. A CSV row is a JSON
  array of its values, so only index paths apply to it. An index outside the data is an error.
- A path through names and single indexes selects one value; a final ``['a','b']`` an object of
  those fields (as Jayway JsonPath, which SageMaker's docs point to, does); wildcards, slices,
  index lists and unions select an array.
- JoinSource Input joins the raw input record (before the InputFilter): a JSON object gets the
  answer under ``SageMakerOutput`` (replacing one there); any other JSON value becomes
  ``{"SageMakerInput": input, "SageMakerOutput": answer}``; a CSV row gets the answer's values
  appended as columns. The joined record is written as the input was (CSV or JSON).
- The OutputFilter applies to the joined record, or to the answer when there is no join.

Where the documentation is silent, coldbrew chooses:

- Slices end before ``end``, as in Jayway and JavaScript's slice(), which the operator table names;
  the worked CSV example's "inclusive" wording contradicts it.
- Answers are split by the Accept type (ContentType when Accept is unset): text/csv and
  application/jsonlines into non-empty lines; application/json into the elements of an array of
  one element per input row (also for a single Line record, so a row's answer does not depend on
  the batch size), else, for a single row, the whole document; a body of several JSON documents,
  one a line, is read as JSON Lines. The one row of a whole object (SplitType None) whose answer
  has several lines gets them all, as an array.
- A CSV answer joined to JSON is the array of its values, numbers as numbers. A JSON answer joined
  to CSV contributes an array's elements, or a single value, as columns.
- With SplitType None a CSV or JSON Lines object is one record of many rows: filters and joins
  apply row by row, and the answer must have one row per input row.
- JSON is written compactly; CSV with minimal quoting. A CSV join without an OutputFilter appends
  the answer line to the input line byte for byte.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import jsonpath_ng
from jsonpath_ng import jsonpath as _jsonpath
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.jsonpath import Child, Fields, Index, JSONPath, Root, Slice, Union

from coldbrew.transform.records import TransformInputError
from coldbrew.worker.media import CSV, JSON, JSONLINES, canonical

FORMATS = (CSV, JSON, JSONLINES)
JOIN_SOURCES = ("None", "Input")
IDENTITY = "$"

OUTPUT_KEY = "SageMakerOutput"
INPUT_KEY = "SageMakerInput"

_SUBSET = "$, .name, *, ['name',...], [index,...] and [start:end]"


class TransformOutputError(Exception):
    """A batch's answer cannot be made into output records; ``message`` says why and what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _PathError(Exception):
    """An expression does not fit the data it is applied to (the caller names both)."""


# --- JSONPath -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JsonPathFilter:
    """One InputFilter or OutputFilter, parsed once by jsonpath-ng and evaluated here.

    jsonpath-ng parses; the evaluation is this module's so that it has SageMaker's semantics,
    which jsonpath-ng's ``find`` does not: an index outside the data is an error rather than no
    match, and the result's shape (one value, an object, an array) follows the path, not the
    number of matches.
    """

    member: str
    """``InputFilter`` or ``OutputFilter``, for messages."""
    expression: str
    node: JSONPath = field(repr=False, compare=False)
    shape: str = field(repr=False, compare=False)
    """``one``, ``object`` or ``many``: what ``select`` returns."""

    @classmethod
    def compile(cls, member: str, expression: str | None) -> JsonPathFilter:
        """The filter for ``expression`` (None or empty: ``$``); ValueError naming it if it is not
        a JSONPath in SageMaker's subset."""
        expression = expression or IDENTITY
        try:
            node = _parse(expression.strip())
        except (JSONPathError, ValueError, TypeError, IndexError) as e:
            # jsonpath-ng's lexer and parser raise JSONPathError, and plain errors on odd input.
            raise ValueError(
                f"{member} {expression!r} is not a valid JSONPath expression ({e}): SageMaker "
                f"supports {_SUBSET}"
            ) from None
        problem = _unsupported(node)
        if problem:
            raise ValueError(f"{member} {expression!r} {problem}: SageMaker supports {_SUBSET}")
        return cls(member, expression, node, _shape(node))

    @property
    def identity(self) -> bool:
        return isinstance(self.node, Root)

    def selects_by_name(self) -> bool:
        """Whether any step selects object fields, which a CSV row (an array) does not have."""
        return any(isinstance(step, Fields) and not _is_wildcard(step) for step in _steps(self.node))

    def select(self, document: Any) -> Any:
        """The part of ``document`` the expression selects; _PathError when it does not fit."""
        values = _evaluate(self.node, document)
        if self.shape == "one":
            return values[0]
        if self.shape == "object":
            assert isinstance(self.node, Child) and isinstance(self.node.right, Fields)
            return dict(zip(self.node.right.fields, values, strict=True))
        return values


# "[0,5:]" (an example in SageMaker's API reference) mixes indexes and slices in one bracket, which
# jsonpath-ng's grammar does not: it becomes the union of "[0]" and "[5:]".
_BRACKET = re.compile(r"\[([^\[\]'\"]*)\]")


def _parse(expression: str) -> JSONPath:
    for match in _BRACKET.finditer(expression):
        parts = match.group(1).split(",")
        if len(parts) > 1 and any(":" in part for part in parts):
            head, tail = expression[: match.start()], expression[match.end() :]
            alternatives = [_parse(f"{head}[{part.strip()}]{tail}") for part in parts]
            return functools.reduce(Union, alternatives)
    return jsonpath_ng.parse(expression)


# "*" as a step: jsonpath-ng before 1.7 parses it as the field "*" (``$.*``) or the slice ``[:]``
# (``$[*]``), later versions as a Wildcard node of their own.
_WILDCARD: type | None = getattr(_jsonpath, "Wildcard", None)


def _is_wildcard(step: JSONPath) -> bool:
    return (isinstance(step, Fields) and step.fields == ("*",)) or (
        _WILDCARD is not None and isinstance(step, _WILDCARD)
    )


def _unsupported(node: JSONPath) -> str | None:
    if isinstance(node, Root):
        return None
    if isinstance(node, Union):
        return _unsupported(node.left) or _unsupported(node.right)
    if isinstance(node, Child):
        if isinstance(node.right, Slice) and node.right.step == 0:
            return "has a slice step of 0"
        if not (isinstance(node.right, Fields | Index | Slice) or _is_wildcard(node.right)):
            return _outside_subset(node.right)
        return _unsupported(node.left)
    if isinstance(node, Fields):
        return "does not start with $ (the root), as every SageMaker JSONPath must"
    return _outside_subset(node)


_OPERATORS = {"Descendants": "recursive descent (..)", "Intersect": "intersection (&)", "Where": "where"}


def _outside_subset(node: JSONPath) -> str:
    name = _OPERATORS.get(type(node).__name__, f"{type(node).__name__} ({node})")
    return f"uses {name}, which is not in SageMaker's JSONPath subset"


def _steps(node: JSONPath) -> Iterator[JSONPath]:
    if isinstance(node, Union):
        yield from _steps(node.left)
        yield from _steps(node.right)
    elif isinstance(node, Child):
        yield from _steps(node.left)
        yield node.right


def _shape(node: JSONPath) -> str:
    if isinstance(node, Root):
        return "one"
    if isinstance(node, Child) and _shape(node.left) == "one":
        step = node.right
        if isinstance(step, Fields) and not _is_wildcard(step):
            return "one" if len(step.fields) == 1 else "object"
        if isinstance(step, Index) and len(_indices(step)) == 1:
            return "one"
    return "many"


def _indices(step: Index) -> tuple[int, ...]:
    # jsonpath-ng 1.6 has one ``index``; later versions a tuple of ``indices``.
    indices = getattr(step, "indices", None)
    return tuple(indices) if indices is not None else (cast(Any, step).index,)


def _evaluate(node: JSONPath, document: Any) -> list[Any]:
    if isinstance(node, Root):
        return [document]
    if isinstance(node, Union):
        return _evaluate(node.left, document) + _evaluate(node.right, document)
    assert isinstance(node, Child)  # compile() lets nothing else through
    return [value for parent in _evaluate(node.left, document) for value in _step(node.right, parent)]


def _step(step: JSONPath, value: Any) -> list[Any]:
    if _is_wildcard(step):
        return _children(value)
    if isinstance(step, Fields):
        if not isinstance(value, dict):
            raise _PathError(f"{_names(step.fields)} selects by name, but the value there is {_kind(value)}")
        for name in step.fields:
            if name not in value:
                raise _PathError(f"there is no field {name!r} (the object has {_names(tuple(value))})")
        return [value[name] for name in step.fields]
    if isinstance(step, Index):
        indices = _indices(step)
        if not isinstance(value, list):
            raise _PathError(f"{list(indices)} selects by index, but the value there is {_kind(value)}")
        for index in indices:
            if not -len(value) <= index < len(value):
                raise _PathError(f"index {index} is outside the array of {len(value)} values")
        return [value[index] for index in indices]
    assert isinstance(step, Slice)
    if step.start is None and step.end is None and step.step is None:  # [*] parses as [:]
        return _children(value)
    if not isinstance(value, list):
        raise _PathError(f"a slice selects from an array, but the value there is {_kind(value)}")
    return list(value[step.start : step.end : step.step])


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return list(value)
    return []


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(repr(name) for name in names[:10]) + (", ..." if len(names) > 10 else "") or "no fields"


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return f"the {type(value).__name__} {json.dumps(value)[:40]}"


# --- DataProcessing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordProcessing:
    """A job's DataProcessing with the formats it applies to; see the module docstring."""

    input_filter: JsonPathFilter
    output_filter: JsonPathFilter
    join: bool
    input_format: str | None
    """ContentType's media type (aliases resolved), or None when unset."""
    output_format: str | None
    """Accept's media type, ContentType's when Accept is unset."""

    @classmethod
    def from_request(
        cls, data_processing: dict[str, Any] | None, content_type: str | None, accept: str | None
    ) -> RecordProcessing:
        """ValueError naming what is wrong (see the module docstring)."""
        dp = data_processing or {}
        answers_type = accept or content_type
        join_source = dp.get("JoinSource") or "None"
        if join_source not in JOIN_SOURCES:
            raise ValueError(f"JoinSource must be Input or None, not {join_source!r}")
        processing = cls(
            input_filter=JsonPathFilter.compile("InputFilter", dp.get("InputFilter")),
            output_filter=JsonPathFilter.compile("OutputFilter", dp.get("OutputFilter")),
            join=join_source == "Input",
            input_format=canonical(content_type) if content_type else None,
            output_format=canonical(answers_type) if answers_type else None,
        )
        processing._validate(content_type, accept)
        return processing

    def _validate(self, content_type: str | None, accept: str | None) -> None:
        uses = self._uses()
        if (uses["InputFilter"] or self.join) and self.input_format not in FORMATS:
            names = " and ".join(name for name in ("InputFilter", "JoinSource Input") if uses[name])
            raise ValueError(
                f"{names} applies to text/csv, application/json and application/jsonlines data, but "
                f"TransformInput.ContentType is {_shown(content_type)}: set it to one of those"
            )
        if self.needs_records_back() and self.output_format not in FORMATS:
            names = " and ".join(name for name in ("JoinSource Input", "OutputFilter") if uses[name])
            raise ValueError(
                f"{names} needs the model's answers in text/csv, application/json or "
                f"application/jsonlines, but TransformOutput.Accept is {_shown(accept)}"
                f"{'' if accept else f' (so ContentType, {_shown(content_type)}, is used)'}: set it to "
                "one of those"
            )
        csv_output = (self.input_format if self.join else self.output_format) == CSV
        for path, is_csv in ((self.input_filter, self.input_format == CSV), (self.output_filter, csv_output)):
            if is_csv and path.selects_by_name():
                raise ValueError(
                    f"{path.member} {path.expression!r} selects by name, but a text/csv record is an "
                    "array of values: select columns by index, such as $[1:] or $[0,2]"
                )

    def _uses(self) -> dict[str, bool]:
        return {
            "InputFilter": not self.input_filter.identity,
            "JoinSource Input": self.join,
            "OutputFilter": not self.output_filter.identity,
        }

    def needs_records_back(self) -> bool:
        """Whether ``process_output`` has work: a join, or an OutputFilter other than ``$``."""
        return self.join or not self.output_filter.identity

    # --- the input side ---------------------------------------------------------------------

    def filter_input(self, record: bytes) -> bytes:
        """``record`` with the InputFilter applied (row by row, for CSV and JSON Lines); the
        identity returns it untouched. TransformInputError when the filter does not fit it."""
        if self.input_filter.identity:
            return record
        try:
            if self.input_format == JSON:
                return _dump_json(self.input_filter.select(_load_json(record)))
            lines = _rows(record)
            if self.input_format == CSV:
                filtered = [_dump_csv(self.input_filter.select(_load_csv(line))) for line in lines]
            else:
                filtered = [_dump_json(self.input_filter.select(_load_json(line))) for line in lines]
        except (_PathError, ValueError) as e:
            raise TransformInputError(
                f"InputFilter {self.input_filter.expression!r} cannot be applied to the input record "
                f"{_preview(record)}: {e}"
            ) from None
        # A Line record is one row; a whole object's rows keep their line endings.
        return b"\n".join(filtered) + (b"\n" if b"\n" in record else b"")

    # --- the output side --------------------------------------------------------------------

    def process_output(self, inputs: list[bytes], output: bytes, split_type: str) -> list[bytes]:
        """A batch's answer as one output record per input row, joined and filtered.

        ``inputs`` are the batch's records as read (before the InputFilter); ``split_type`` says
        whether each is one row (Line) or may be several (None). Without a join or an OutputFilter
        the answer is returned whole, as the only piece.
        """
        if not self.needs_records_back():
            return [output]
        rows = inputs if split_type == "Line" else [row for record in inputs for row in self._rows_of(record)]
        # A row's answer is its own only when rows were sent: a whole object's answer is all its.
        per_row = split_type == "Line" or len(rows) > 1
        if self._appends_csv():
            lines = _rows(output)
            if len(lines) == len(rows):
                return [row + b"," + line for row, line in zip(rows, lines, strict=True)]  # byte for byte
            if per_row:
                raise self._mismatch(len(rows), f"{len(lines)} lines")
        answers = self._answers(output, len(rows), per_row)
        pieces: list[bytes] = []
        for number, (row, answer) in enumerate(zip(rows, answers, strict=True), start=1):
            value = self._joined(row, answer, number) if self.join else answer
            if not self.output_filter.identity:
                try:
                    value = self.output_filter.select(value)
                except _PathError as e:
                    what = "the joined record" if self.join else "the answer"
                    raise TransformOutputError(
                        f"OutputFilter {self.output_filter.expression!r} cannot be applied to {what} "
                        f"{_preview(_dump_json(value))}: {e}"
                    ) from None
            written_as = self.input_format if self.join else self.output_format
            pieces.append(_dump_csv(value) if written_as == CSV else _dump_json(value))
        return pieces

    def _rows_of(self, record: bytes) -> list[bytes]:
        return [record] if self.input_format == JSON else _rows(record)

    def _appends_csv(self) -> bool:
        """A CSV join without an OutputFilter: answer lines go after input lines as they are."""
        return self.join and self.input_format == CSV == self.output_format and self.output_filter.identity

    def _answers(self, output: bytes, count: int, per_row: bool) -> list[Any]:
        """The parsed answer for each of ``count`` rows."""
        values: list[Any] | None = None
        if self.output_format == JSON:
            try:
                document = json.loads(output)
            except ValueError:  # not one document: perhaps one a line
                values = [_answer_json(line) for line in _rows(output)]
                found = f"{len(values)} lines of JSON"
            else:
                if per_row and isinstance(document, list) and len(document) == count:
                    return list(document)
                if count == 1:
                    return [document]
                found = f"an array of {len(document)} elements" if isinstance(document, list) else "an object"
        else:
            parse = _answer_csv if self.output_format == CSV else _answer_json
            values = [parse(line) for line in _rows(output)]
            found = f"{len(values)} lines"
        if values is not None:
            if len(values) == count:
                return values
            if not per_row:
                return [values]  # one row's answer of several lines
        raise self._mismatch(count, found)

    def _mismatch(self, count: int, found: str) -> TransformOutputError:
        needs = " and ".join(name for name in ("JoinSource Input", "OutputFilter") if self._uses()[name])
        return TransformOutputError(
            f"the model answered a batch of {count} input records with {found} of "
            f"{self.output_format}, but {needs} needs exactly one answer per input record: have the "
            "model answer one line per input line (or a JSON array of one element per record), or "
            "use BatchStrategy SingleRecord"
        )

    def _joined(self, row: bytes, answer: Any, number: int) -> Any:
        try:
            if self.input_format == CSV:
                return _load_csv(row) + _as_columns(answer)
            document = _load_json(row)
        except ValueError as e:
            raise TransformOutputError(
                f"input record {number} of the batch, {_preview(row)}, cannot be joined: {e}"
            ) from None
        if self.output_format == CSV:
            answer = _numbers(answer)  # a CSV row is an array of values, numbers as numbers
        if isinstance(document, dict):
            return {**document, OUTPUT_KEY: answer}
        return {INPUT_KEY: document, OUTPUT_KEY: answer}


# --- formats ------------------------------------------------------------------------------------


def _rows(data: bytes) -> list[bytes]:
    """The non-empty lines of ``data``, without line endings (empty lines are no records)."""
    return [line for line in (part.removesuffix(b"\r") for part in data.split(b"\n")) if line]


def _load_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both
        raise ValueError(f"it is not valid JSON ({e})") from None


def _load_csv(line: bytes) -> list[Any]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"it is not UTF-8 text ({e})") from None
    return next(csv.reader([text]), [])


def _answer_json(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError as e:
        raise TransformOutputError(
            f"the model's answer is not JSON, nor JSON documents one a line ({e}); it begins "
            f"{_preview(line)}: make the model answer in the Accept type"
        ) from None


def _answer_csv(line: bytes) -> list[str]:
    try:
        return _load_csv(line)
    except ValueError as e:
        raise TransformOutputError(f"the model's answer is not CSV text: {e}") from None


_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


def _numbers(value: Any) -> Any:
    if isinstance(value, list):
        return [_numbers(item) for item in value]
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return json.loads(value)
    return value


def _as_columns(answer: Any) -> list[Any]:
    return list(answer) if isinstance(answer, list) else [answer]


def _dump_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _dump_csv(value: Any) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([_cell(v) for v in _as_columns(value)])
    return out.getvalue().encode()


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _preview(data: bytes) -> str:
    text = data[:80].decode("utf-8", "replace")
    return repr(text + ("..." if len(data) > 80 else ""))


def _shown(value: str | None) -> str:
    return repr(value) if value else "unset"
