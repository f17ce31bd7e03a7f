"""Finding the one model file a framework's default ``model_fn`` loads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from coldbrew.worker.errors import ModelLoadError


def single_model_file(
    model_dir: Path,
    *,
    kind: str,
    names: Sequence[str],
    suffixes: Sequence[str],
    accept: Callable[[Path], bool] | None = None,
    check_names: bool = False,
) -> Path | None:
    """The file named by ``names`` (first that exists), else the only file with one of ``suffixes``.

    ``accept`` tells a framework's own files from others with the same suffix (a README.txt next
    to a LightGBM model); ``check_names`` applies it to the named files too. Several candidates
    and no named file is ambiguous, and the load fails saying which file to rename.
    """
    for name in names:
        path = model_dir / name
        if path.is_file() and (not check_names or accept is None or accept(path)):
            return path
    try:
        candidates = sorted(p for p in model_dir.iterdir() if p.suffix in suffixes and p.is_file())
    except OSError:
        return None
    if accept is not None:
        candidates = [p for p in candidates if accept(p)]
    if len(candidates) > 1:
        found = ", ".join(p.name for p in candidates)
        raise ModelLoadError(
            f"Several {kind} in {model_dir} ({found}): rename the one to serve to {names[0]}, "
            "or load it with a model_fn in code/inference.py"
        )
    return candidates[0] if candidates else None
