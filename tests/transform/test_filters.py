"""DataProcessing (coldbrew.transform.filters): InputFilter, JoinSource and OutputFilter on the
diabetes data, answered by a linear model through the worker's default codecs, as a job's worker
would answer them."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression

from coldbrew.transform import records
from coldbrew.transform.filters import JsonPathFilter, RecordProcessing, TransformOutputError
from coldbrew.transform.records import TransformInputError
from coldbrew.worker import codecs

CSV, JSON, JSONLINES = "text/csv", "application/json", "application/jsonlines"

Model = Callable[[bytes, str, str], bytes]


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, LinearRegression]:
    data = load_diabetes()
    return data.data, LinearRegression().fit(data.data, data.target)


@pytest.fixture(scope="module")
def model(diabetes: tuple[np.ndarray, LinearRegression]) -> Model:
    """A batch's answer as the worker gives it: the default input_fn, predict, the default output_fn."""
    _, regression = diabetes

    def answer(payload: bytes, content_type: str, accept: str) -> bytes:
        return codecs.encode(regression.predict(codecs.decode(payload, content_type)), accept)[0]

    return answer


def csv_with_ids(features: np.ndarray) -> list[bytes]:
    return [
        f"id-{i},".encode() + ",".join(repr(float(v)) for v in row).encode() for i, row in enumerate(features)
    ]


def run(
    processing: RecordProcessing,
    model: Model,
    body: bytes,
    *,
    content_type: str,
    accept: str,
    split_type: str = "Line",
    strategy: str = "MultiRecord",
    limit: int = 4096,
    assemble_with: str = "Line",
) -> bytes:
    """One object through a job's data path, as the pipeline strings the pieces together."""
    raw: list[bytes] = []

    def filtered() -> list[bytes]:
        out = []
        for record in records.split_records(io.BytesIO(body), split_type, limit):
            raw.append(record)
            out.append(processing.filter_input(record))
        return out

    pieces: list[bytes] = []
    for batch in records.batch_payloads(filtered(), strategy, split_type, limit):
        inputs, raw[: batch.count] = raw[: batch.count], []
        output = model(batch.payload, content_type, accept)
        if processing.needs_records_back():
            pieces.extend(processing.process_output(inputs, output, split_type))
        else:
            pieces.append(output)
    return b"".join(records.assemble(pieces, assemble_with))


# --- InputFilter --------------------------------------------------------------------------------


def test_csv_input_filter_drops_the_id_column(diabetes: tuple[np.ndarray, LinearRegression]) -> None:
    features, _ = diabetes
    processing = RecordProcessing.from_request({"InputFilter": "$[1:]"}, CSV, None)
    for line in csv_with_ids(features[:20]):
        assert processing.filter_input(line) == line.split(b",", 1)[1]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("$[0,2]", b"a,c"),
        ("$[-1]", b"e"),
        ("$[1:3]", b"b,c"),  # the end is excluded, as in Jayway JsonPath and JavaScript's slice()
        ("$[:2]", b"a,b"),
        ("$[0,3:]", b"a,d,e"),  # indexes and a slice in one bracket, as in SageMaker's own example
        ("$[*]", b"a,b,c,d,e"),
        ("$", b"a,b,c,d,e"),
    ],
)
def test_csv_columns_by_index(expression: str, expected: bytes) -> None:
    assert (
        RecordProcessing.from_request({"InputFilter": expression}, CSV, None).filter_input(b"a,b,c,d,e")
        == expected
    )


def test_csv_filters_keep_quoted_values_whole() -> None:
    processing = RecordProcessing.from_request({"InputFilter": "$[0,2]"}, CSV, None)
    assert processing.filter_input(b'"Smith, J.",41,"said ""hi""",x') == b'"Smith, J.","said ""hi"""'


def test_an_index_outside_the_row_is_an_error_naming_the_filter() -> None:
    processing = RecordProcessing.from_request({"InputFilter": "$[0,12]"}, CSV, None)
    with pytest.raises(TransformInputError) as caught:
        processing.filter_input(b"1,2,3")
    assert caught.value.message == (
        "InputFilter '$[0,12]' cannot be applied to the input record '1,2,3': "
        "index 12 is outside the array of 3 values"
    )


def test_json_input_filters() -> None:
    record = b'{"id": 7, "features": [0.1, 0.2, 0.3], "meta": {"a": 1, "b": "x"}}'
    expected = {
        "$.features": b"[0.1,0.2,0.3]",
        "$.features[1:]": b"[0.2,0.3]",
        "$.features[-1]": b"0.3",
        "$['id','features']": b'{"id":7,"features":[0.1,0.2,0.3]}',
        "$.meta.*": b'[1,"x"]',
        "$.meta.b": b'"x"',
    }
    for expression, filtered in expected.items():
        processing = RecordProcessing.from_request({"InputFilter": expression}, JSONLINES, None)
        assert processing.filter_input(record) == filtered, expression


def test_a_missing_json_field_is_an_error() -> None:
    processing = RecordProcessing.from_request({"InputFilter": "$.features"}, JSON, None)
    with pytest.raises(
        TransformInputError, match=r"there is no field 'features' \(the object has 'id', 'x'\)"
    ):
        processing.filter_input(b'{"id": 1, "x": [1]}')
    with pytest.raises(TransformInputError, match="it is not valid JSON"):
        processing.filter_input(b"1,2,3")


def test_the_identity_returns_the_record_untouched() -> None:
    processing = RecordProcessing.from_request(None, None, None)
    record = b"  odd, bytes \xff"
    assert processing.filter_input(record) is record
    assert not processing.needs_records_back()
    assert processing.process_output([record], b"answer", "Line") == [b"answer"]


def test_a_whole_object_is_filtered_row_by_row() -> None:
    processing = RecordProcessing.from_request({"InputFilter": "$[1:]"}, CSV, None)
    assert processing.filter_input(b"id-1,1,2\r\nid-2,3,4\n") == b"1,2\n3,4\n"


# --- JoinSource and OutputFilter, through a model ------------------------------------------------


def test_csv_join_appends_each_prediction_to_its_input_line(
    diabetes: tuple[np.ndarray, LinearRegression], model: Model
) -> None:
    features, regression = diabetes
    lines = csv_with_ids(features)
    processing = RecordProcessing.from_request({"InputFilter": "$[1:]", "JoinSource": "Input"}, CSV, CSV)
    output = run(processing, model, b"\n".join(lines) + b"\n", content_type=CSV, accept=CSV)
    rows = output.decode().splitlines()
    assert len(rows) == 442
    predictions = regression.predict(features)
    for line, row, prediction in zip(lines, rows, predictions, strict=True):
        head, _, value = row.rpartition(",")
        assert head.encode() == line  # the raw input, id included, byte for byte
        assert float(value) == pytest.approx(prediction)


def test_csv_output_filter_keeps_the_id_and_the_prediction(
    diabetes: tuple[np.ndarray, LinearRegression], model: Model
) -> None:
    features, regression = diabetes
    lines = csv_with_ids(features[:100])
    processing = RecordProcessing.from_request(
        {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"}, CSV, CSV
    )
    for strategy in ("SingleRecord", "MultiRecord"):
        output = run(processing, model, b"\r\n".join(lines), content_type=CSV, accept=CSV, strategy=strategy)
        rows = [row.split(",") for row in output.decode().splitlines()]
        assert [row[0] for row in rows] == [f"id-{i}" for i in range(100)]
        assert [float(row[1]) for row in rows] == pytest.approx(regression.predict(features[:100]).tolist())


def test_json_object_join_puts_the_answer_under_sagemaker_output(
    diabetes: tuple[np.ndarray, LinearRegression], model: Model
) -> None:
    features, regression = diabetes
    lines = [json.dumps({"id": i, "features": row.tolist()}).encode() for i, row in enumerate(features[:60])]
    processing = RecordProcessing.from_request(
        {"InputFilter": "$.features", "JoinSource": "Input"}, JSONLINES, JSON
    )
    # The model answers a MultiRecord batch of JSON Lines with one JSON array, an element per record.
    output = run(processing, model, b"\n".join(lines), content_type=JSONLINES, accept=JSON, limit=3000)
    joined = [json.loads(line) for line in output.splitlines()]
    assert [item["id"] for item in joined] == list(range(60))
    assert [item["features"] for item in joined] == features[:60].tolist()
    assert [item["SageMakerOutput"] for item in joined] == pytest.approx(
        regression.predict(features[:60]).tolist()
    )


def test_json_output_filter_selects_fields_of_the_joined_record(
    diabetes: tuple[np.ndarray, LinearRegression], model: Model
) -> None:
    features, regression = diabetes
    lines = [
        json.dumps({"id": f"r{i}", "features": row.tolist()}).encode() for i, row in enumerate(features[:30])
    ]
    processing = RecordProcessing.from_request(
        {"InputFilter": "$.features", "JoinSource": "Input", "OutputFilter": "$['id','SageMakerOutput']"},
        JSONLINES,
        JSONLINES,
    )
    output = run(processing, model, b"\n".join(lines), content_type=JSONLINES, accept=JSONLINES)
    joined = [json.loads(line) for line in output.splitlines()]
    assert [list(item) for item in joined] == [["id", "SageMakerOutput"]] * 30
    assert [item["id"] for item in joined] == [f"r{i}" for i in range(30)]
    assert [item["SageMakerOutput"] for item in joined] == pytest.approx(
        regression.predict(features[:30]).tolist()
    )


def test_a_json_array_input_is_joined_under_sagemaker_input(
    diabetes: tuple[np.ndarray, LinearRegression], model: Model
) -> None:
    features, regression = diabetes
    lines = [json.dumps(row.tolist()).encode() for row in features[:5]]
    processing = RecordProcessing.from_request({"JoinSource": "Input"}, JSON, JSON)
    output = run(
        processing, model, b"\n".join(lines), content_type=JSON, accept=JSON, strategy="SingleRecord"
    )
    joined = [json.loads(line) for line in output.splitlines()]
    assert [item["SageMakerInput"] for item in joined] == features[:5].tolist()
    # One row's answer is the one element of the array the model answers it with.
    assert [item["SageMakerOutput"] for item in joined] == pytest.approx(
        regression.predict(features[:5]).tolist()
    )


def test_the_documented_csv_example() -> None:
    # "if the record is [1,2,3], and the label result is [1], then the output file would contain [1,2,3,1]"
    processing = RecordProcessing.from_request({"JoinSource": "Input"}, CSV, CSV)
    assert processing.process_output([b"1,2,3"], b"1\n", "Line") == [b"1,2,3,1"]


def test_a_json_answer_joined_to_csv_gives_its_values_as_columns() -> None:
    processing = RecordProcessing.from_request({"JoinSource": "Input", "OutputFilter": "$[0,-2:]"}, CSV, JSON)
    pieces = processing.process_output([b"a,1", b"b,2"], b"[[0.25, 0.75], [0.5, 0.5]]", "Line")
    assert pieces == [b"a,0.25,0.75", b"b,0.5,0.5"]


def test_a_csv_answer_joined_to_json_is_an_array_of_numbers() -> None:
    processing = RecordProcessing.from_request({"JoinSource": "Input"}, JSONLINES, CSV)
    pieces = processing.process_output([b'{"x": 1}', b'{"x": 2}'], b"0.1,yes\r\n2e3,no\r\n", "Line")
    assert [json.loads(piece) for piece in pieces] == [
        {"x": 1, "SageMakerOutput": [0.1, "yes"]},
        {"x": 2, "SageMakerOutput": [2000.0, "no"]},
    ]


def test_an_input_sagemaker_output_field_is_replaced() -> None:
    processing = RecordProcessing.from_request({"JoinSource": "Input"}, JSON, JSON)
    assert processing.process_output([b'{"SageMakerOutput": "old"}'], b'{"label": 1}', "Line") == [
        b'{"SageMakerOutput":{"label":1}}'
    ]


def test_an_output_filter_alone_applies_to_each_answer() -> None:
    processing = RecordProcessing.from_request({"OutputFilter": "$[1]"}, CSV, None)
    assert processing.needs_records_back()
    assert processing.process_output([b"x", b"y"], b"0.1,0.9\n0.7,0.3\n", "Line") == [b"0.9", b"0.3"]


def test_a_whole_csv_object_is_joined_row_by_row(
    diabetes: tuple[np.ndarray, LinearRegression], model: Model
) -> None:
    features, regression = diabetes
    lines = csv_with_ids(features[:25])
    processing = RecordProcessing.from_request(
        {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"}, CSV, CSV
    )
    body = b"\n".join(lines) + b"\n"
    output = run(processing, model, body, content_type=CSV, accept=CSV, split_type="None", limit=records.MiB)
    rows = [row.split(",") for row in output.decode().splitlines()]
    assert [row[0] for row in rows] == [f"id-{i}" for i in range(25)]
    assert [float(row[1]) for row in rows] == pytest.approx(regression.predict(features[:25]).tolist())


# --- one answer per record ----------------------------------------------------------------------


def test_an_answer_with_too_few_lines_fails_the_join() -> None:
    processing = RecordProcessing.from_request({"JoinSource": "Input"}, CSV, CSV)
    with pytest.raises(TransformOutputError) as caught:
        processing.process_output([b"1,2", b"3,4", b"5,6"], b"0.5\n0.6\n", "Line")
    assert caught.value.message.startswith(
        "the model answered a batch of 3 input records with 2 lines of text/csv, but JoinSource Input "
        "needs exactly one answer per input record"
    )
    assert "BatchStrategy SingleRecord" in caught.value.message


def test_a_json_array_of_the_wrong_length_fails_the_output_filter() -> None:
    processing = RecordProcessing.from_request({"OutputFilter": "$.label"}, JSONLINES, JSON)
    with pytest.raises(
        TransformOutputError, match="with an array of 2 elements of application/json, but OutputFilter"
    ):
        processing.process_output([b"[1]", b"[2]", b"[3]"], b'[{"label": 1}, {"label": 2}]', "Line")
    with pytest.raises(TransformOutputError, match="with an object of application/json"):
        processing.process_output([b"[1]", b"[2]"], b'{"predictions": [1, 2]}', "Line")


def test_a_model_aggregating_a_batch_fails_the_join(
    model: Model, diabetes: tuple[np.ndarray, LinearRegression]
) -> None:
    features, _ = diabetes

    def mean_of_batch(payload: bytes, content_type: str, accept: str) -> bytes:
        predictions = [float(value) for value in model(payload, content_type, accept).split()]
        return f"{np.mean(predictions)!r}\n".encode()

    processing = RecordProcessing.from_request({"JoinSource": "Input"}, CSV, CSV)
    body = b"\n".join(line.split(b",", 1)[1] for line in csv_with_ids(features[:10]))
    with pytest.raises(TransformOutputError, match="a batch of 10 input records with 1 lines"):
        run(processing, mean_of_batch, body, content_type=CSV, accept=CSV)


def test_json_lines_in_a_json_answer_are_one_answer_a_line() -> None:
    processing = RecordProcessing.from_request({"JoinSource": "Input"}, JSONLINES, JSON)
    pieces = processing.process_output([b'{"a": 1}', b'{"a": 2}'], b'{"p": 1}\n{"p": 2}\n', "Line")
    assert pieces == [b'{"a":1,"SageMakerOutput":{"p":1}}', b'{"a":2,"SageMakerOutput":{"p":2}}']


def test_an_answer_that_is_not_json_fails_naming_it() -> None:
    processing = RecordProcessing.from_request({"JoinSource": "Input"}, JSON, JSON)
    with pytest.raises(TransformOutputError, match="the model's answer is not JSON"):
        processing.process_output([b"[1]", b"[2]"], b"0.1\n0.2\n{", "Line")


def test_an_output_filter_that_does_not_fit_the_answer_fails() -> None:
    processing = RecordProcessing.from_request({"JoinSource": "Input", "OutputFilter": "$[0,4]"}, CSV, CSV)
    with pytest.raises(
        TransformOutputError, match=r"OutputFilter '\$\[0,4\]' .* index 4 is outside the array of 3"
    ):
        processing.process_output([b"a,b"], b"1\n", "Line")


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "detail"),
    [
        ("$[", "is not a valid JSONPath expression"),
        ("$['a", "is not a valid JSONPath expression"),
        ("$[?(@.a > 1)]", "is not a valid JSONPath expression"),
        ("$..features", "uses recursive descent (..), which is not in SageMaker's JSONPath subset"),
        ("features[0]", "does not start with $"),
        ("$[0:4:0]", "has a slice step of 0"),
    ],
)
def test_invalid_jsonpath_is_a_value_error_naming_it(expression: str, detail: str) -> None:
    for member in ("InputFilter", "OutputFilter"):
        with pytest.raises(ValueError) as caught:
            RecordProcessing.from_request({member: expression}, JSON, JSON)
        message = str(caught.value)
        assert message.startswith(f"{member} {expression!r} ")
        assert detail in message
        assert "SageMaker supports $, .name, *" in message


def test_names_on_csv_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"InputFilter '\$.features' selects by name, but a text/csv record"):
        RecordProcessing.from_request({"InputFilter": "$.features"}, CSV, CSV)
    # A CSV join is written as CSV, so its OutputFilter picks columns too...
    with pytest.raises(ValueError, match=re.escape("""OutputFilter "$['id']" selects by name""")):
        RecordProcessing.from_request({"JoinSource": "Input", "OutputFilter": "$['id']"}, CSV, JSON)
    # ...while a JSON answer without a join is JSON.
    RecordProcessing.from_request({"OutputFilter": "$.label"}, CSV, JSON)


def test_filters_need_a_content_type_they_can_read() -> None:
    with pytest.raises(
        ValueError, match="InputFilter applies to text/csv, application/json and application/jsonlines"
    ):
        RecordProcessing.from_request({"InputFilter": "$[1:]"}, "application/x-recordio-protobuf", None)
    with pytest.raises(ValueError, match="TransformInput.ContentType is unset"):
        RecordProcessing.from_request({"JoinSource": "Input"}, None, None)
    with pytest.raises(ValueError, match="TransformOutput.Accept is 'application/x-npy'"):
        RecordProcessing.from_request({"JoinSource": "Input"}, CSV, "application/x-npy")
    # Content types are read as the worker reads them: parameters and aliases are fine.
    RecordProcessing.from_request(
        {"JoinSource": "Input"}, "text/csv; charset=utf-8", "application/x-jsonlines"
    )
    # The identity needs nothing.
    RecordProcessing.from_request(
        {"InputFilter": "$", "JoinSource": "None", "OutputFilter": "$"}, "image/png", None
    )


def test_join_source_must_be_input_or_none() -> None:
    with pytest.raises(ValueError, match="JoinSource must be Input or None, not 'Output'"):
        RecordProcessing.from_request({"JoinSource": "Output"}, CSV, CSV)


def test_needs_records_back_only_for_a_join_or_an_output_filter() -> None:
    cases = {
        (None, None, None): False,
        ("$[1:]", None, None): False,
        (None, "Input", None): True,
        (None, "None", "$[0]"): True,
        ("$", "None", "$"): False,
    }
    for (input_filter, join, output_filter), expected in cases.items():
        request = {"InputFilter": input_filter, "JoinSource": join, "OutputFilter": output_filter}
        processing = RecordProcessing.from_request({k: v for k, v in request.items() if v}, CSV, CSV)
        assert processing.needs_records_back() is expected, request


def test_path_shapes_follow_jayway() -> None:
    document = {"a": {"b": [10, 20, 30]}, "c": 1}
    assert JsonPathFilter.compile("OutputFilter", "$.a.b[1]").select(document) == 20
    assert JsonPathFilter.compile("OutputFilter", "$.a.b[1,2]").select(document) == [20, 30]
    assert JsonPathFilter.compile("OutputFilter", "$['c','a']").select(document) == {
        "c": 1,
        "a": {"b": [10, 20, 30]},
    }
    assert JsonPathFilter.compile("OutputFilter", "$.*").select(document) == [{"b": [10, 20, 30]}, 1]
    assert JsonPathFilter.compile("OutputFilter", "$.a.b[-2:]").select(document) == [20, 30]
    assert JsonPathFilter.compile("OutputFilter", "").identity
