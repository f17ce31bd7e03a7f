"""``text/libsvm`` bodies, as SageMaker's XGBoost container reads them, into a sparse matrix.

Each line is ``[label] index:value index:value ...``: the label is optional and ignored (it is
the training target), indices are column numbers as written (XGBoost does not shift them), and
absent columns are missing values, not zeros. ``qid:N`` tokens (ranking groups) are skipped.
"""

from __future__ import annotations

from typing import Any

from coldbrew.worker.errors import BadRequest


def decode(body: str | bytes, num_features: int | None = None) -> Any:
    """A ``scipy.sparse.csr_matrix`` with one row per non-empty line.

    With ``num_features``, the matrix has exactly that many columns, and an index beyond them is
    a 400 (the model has no such feature); without, as many as the largest index needs.
    """
    import numpy as np
    import scipy.sparse

    try:
        text = body if isinstance(body, str) else body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not valid UTF-8: {exc}") from None
    indptr = [0]
    indices: list[int] = []
    values: list[float] = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if ":" not in tokens[0]:
            _label(tokens[0], number)
            tokens = tokens[1:]
        for token in tokens:
            name, sep, raw = token.partition(":")
            if name == "qid":
                continue
            try:
                index = int(name)
                value = float(raw)
            except ValueError:
                index, value = -1, 0.0
            if not sep or index < 0:
                raise BadRequest(
                    f"libsvm line {number}: {token[:100]!r} is not index:value "
                    "(send lines of 'label index:value ...', the label optional)"
                )
            if num_features is not None and index >= num_features:
                raise BadRequest(
                    f"libsvm line {number}: feature index {index} is out of range: "
                    f"the model has {num_features} features (indices 0 to {num_features - 1})"
                )
            indices.append(index)
            values.append(value)
        indptr.append(len(indices))
    if len(indptr) == 1:
        raise BadRequest("the libsvm body has no rows")
    width = num_features if num_features is not None else (max(indices) + 1 if indices else 0)
    return scipy.sparse.csr_matrix(
        (np.array(values, dtype=np.float32), np.array(indices, dtype=np.int64), np.array(indptr)),
        shape=(len(indptr) - 1, width),
    )


def _label(token: str, number: int) -> None:
    try:
        float(token)
    except ValueError:
        shown = repr(token[:100])
        raise BadRequest(f"libsvm line {number}: {shown} is neither a label nor index:value") from None
