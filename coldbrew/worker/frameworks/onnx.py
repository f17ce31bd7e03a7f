"""ONNX: ``model.onnx`` (or a single ``*.onnx``) run by onnxruntime on the CPU.

A request's rows (CSV, JSON, JSON Lines, NPY) become the graph's single input, cast to that
input's element type; a graph with several inputs takes a JSON object keyed by input name. One
output is answered as that array; several as ``{output name: value}`` (see :func:`output_fn`).
``onnxruntime`` is imported only inside ``model_fn``: it starts native threads at import, so a
forking zygote must not pre-import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coldbrew.worker.errors import BadRequest, ModelLoadError, NotAcceptable, UnsupportedMediaType, one_line
from coldbrew.worker.frameworks.files import single_model_file
from coldbrew.worker.frameworks.requires import require
from coldbrew.worker.media import CSV, JSON, JSONLINES, NPY, canonical

NAME = "ONNX"

MODEL_FILE = "model.onnx"
SUFFIXES = (".onnx",)

EXPECTED = "model.onnx (or a single *.onnx file)"

# ONNX element types as numpy dtype names; the ones a request of numbers can be cast to.
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def find_model_file(model_dir: Path) -> Path | None:
    return single_model_file(model_dir, kind="ONNX models", names=(MODEL_FILE,), suffixes=SUFFIXES)


def model_fn(model_dir: str) -> Any:
    path = find_model_file(Path(model_dir))
    if path is None:
        raise ModelLoadError(f"No ONNX model in {model_dir}: expected {EXPECTED}")
    ort = require("onnxruntime", framework=NAME, model_dir=model_dir, extra="onnx")
    options = ort.SessionOptions()
    # One environment serves one request at a time (serverless) and sized its memory for that;
    # intra-op threads beyond one would contend with the other workers on the machine.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"could not load {path} with onnxruntime: {one_line(exc)}") from exc


# --- requests -----------------------------------------------------------------------------------


def input_fn(input_data: str | bytes, content_type: str) -> Any:
    """Rows as the default codecs read them, or, for JSON, an object keyed by input names."""
    from coldbrew.worker import codecs  # numpy: not for a worker that only probes this module

    if canonical(content_type) == JSON and input_data:
        payload = codecs.parse_json(input_data)
        named = payload.get("inputs") if isinstance(payload, dict) else None
        if isinstance(payload, dict) and not ({"instances", "inputs"} & payload.keys()):
            named = payload
        if isinstance(named, dict):
            return named  # {input name: nested list}; matched to the graph in predict_fn
        return codecs.rows_from_json(payload)
    try:
        return codecs.decode(input_data, content_type)
    except UnsupportedMediaType:
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not supported by the ONNX input_fn: send "
            f"{CSV}, {JSON}, {JSONLINES} or {NPY}, or define input_fn in code/inference.py"
        ) from None


def predict_fn(data: Any, model: Any) -> Any:
    inputs = model.get_inputs()
    feeds = _feeds(data, inputs)
    outputs = model.get_outputs()
    results = model.run(None, feeds)
    if len(results) == 1:
        return results[0]
    return {output.name: result for output, result in zip(outputs, results, strict=True)}


def _feeds(data: Any, inputs: list[Any]) -> dict[str, Any]:
    names = [i.name for i in inputs]
    if isinstance(data, dict):
        unknown = sorted(set(data) - set(names))
        missing = [n for n in names if n not in data]
        if unknown or missing:
            raise BadRequest(
                f"the model's inputs are {', '.join(names)}; the body "
                + (f"names unknown inputs {', '.join(unknown)}" if unknown else f"lacks {', '.join(missing)}")
            )
        return {i.name: _tensor(data[i.name], i) for i in inputs}
    if len(inputs) != 1:
        raise BadRequest(
            f"the model has {len(inputs)} inputs ({', '.join(names)}): send a JSON object with one "
            "entry per input name"
        )
    return {inputs[0].name: _tensor(data, inputs[0])}


def _tensor(value: Any, node: Any) -> Any:
    import numpy as np

    dtype = _DTYPES.get(node.type)
    if dtype is None:
        raise BadRequest(
            f"input {node.name!r} is of type {node.type}, which the default input_fn cannot build: "
            "define input_fn in code/inference.py"
        )
    try:
        array = np.asarray(value, dtype=np.float64 if np.dtype(dtype).kind == "f" else None)
        integral_input = np.dtype(dtype).kind in "iub" and array.dtype.kind == "f"
        if integral_input and not (np.all(np.isfinite(array)) and np.all(array == np.round(array))):
            # astype would truncate 1.5 to 1 without a word: a wrong answer, not an error.
            raise BadRequest(f"input {node.name!r} takes {node.type} but the values are not all integers")
        array = array.astype(dtype)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"input {node.name!r} takes {node.type}: {exc}") from None
    shape = [d if isinstance(d, int) and d > 0 else None for d in node.shape]
    if array.ndim == len(shape) - 1:
        array = array[np.newaxis]  # a single example without its batch axis
    if array.ndim != len(shape):
        raise BadRequest(
            f"input {node.name!r} takes {len(shape)}-D tensors {_shape(shape)}, got {array.ndim}-D"
        )
    for axis, (want, got) in enumerate(zip(shape, array.shape, strict=True)):
        if want is not None and want != got:
            if axis == len(shape) - 1 and len(shape) == 2:
                raise BadRequest(f"each row must have {want} features, got {got}")
            raise BadRequest(f"input {node.name!r} takes shape {_shape(shape)}, got {list(array.shape)}")
    return array


def _shape(shape: list[int | None]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


# --- responses ----------------------------------------------------------------------------------


def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    """One output as the default codecs write it; several by format:

    - JSON: ``{output name: value}``
    - JSON Lines: one object per row, ``{output name: that row's value}``
    - CSV: the outputs side by side, one row per example (a classifier's label, then its
      probabilities), when every output has one row per example
    - NPY holds one array: 406, naming the outputs
    """
    from coldbrew.worker import codecs

    if not isinstance(prediction, dict):
        return codecs.encode(prediction, accept)
    kind = codecs.negotiate(accept)
    if kind == JSONLINES:
        columns = {name: _rows(value) for name, value in prediction.items()}
        counts = {len(rows) for rows in columns.values()}
        if len(counts) == 1:
            rows = [{name: rows[i] for name, rows in columns.items()} for i in range(counts.pop())]
            return codecs.encode(rows, kind)
        return codecs.encode([prediction], kind)
    if kind == CSV:
        return codecs.encode(_side_by_side(prediction), kind)
    if kind == NPY:
        raise NotAcceptable(
            f"the model has {len(prediction)} outputs ({', '.join(prediction)}) and {NPY} holds one "
            f"array: ask for {JSON}, {JSONLINES} or {CSV}"
        )
    return codecs.encode(prediction, kind)


def _rows(value: Any) -> list[Any]:
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _side_by_side(prediction: dict[str, Any]) -> Any:
    import numpy as np

    blocks: list[list[list[Any]]] = []
    for name, value in prediction.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            # A ZipMap output (skl2onnx's default for classifiers): {class: probability} per row,
            # written as the probabilities in class order.
            value = [[row[k] for k in sorted(row)] for row in value]
        array = np.asarray(value)
        if array.ndim == 1:
            array = array[:, np.newaxis]
        if array.ndim != 2:
            raise NotAcceptable(
                f"output {name!r} of shape {list(array.shape)} does not fit {CSV}: ask for {JSON}"
            )
        blocks.append(array.tolist())
    if len({len(b) for b in blocks}) != 1:
        raise NotAcceptable(
            f"the model's outputs have different numbers of rows, which {CSV} cannot hold: ask for {JSON}"
        )
    # Python values in an object array, so an int64 label stays "1" next to float probabilities
    # (a numeric array would print it as "1.0") and string labels need no common dtype.
    return np.array(
        [[v for part in parts for v in part] for parts in zip(*blocks, strict=True)], dtype=object
    )
