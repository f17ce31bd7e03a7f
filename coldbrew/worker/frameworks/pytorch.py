"""PyTorch: a TorchScript ``model.pt``, as the SageMaker PyTorch inference toolkit serves by default.

Only TorchScript loads without user code, because it carries its own code: an eager module saved
with ``torch.save`` is a pickle that needs its Python classes (and usually the code that builds
them) to come back, so it needs a ``model_fn`` in ``code/inference.py``. The default
``predict_fn`` also serves such a user-loaded module.

``torch`` is imported inside the functions only: probing a model directory (which every worker
does) must not cost a torch import (a second or more) for models of other frameworks.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from coldbrew.worker.errors import ModelLoadError, one_line
from coldbrew.worker.frameworks.requires import require

NAME = "PyTorch"

# The file name the SageMaker PyTorch toolkit's default model_fn loads.
MODEL_FILE = "model.pt"

EXPECTED = f"{MODEL_FILE} (TorchScript)"

EXTRA = "pytorch"  # pip install "coldbrew[pytorch]" provides torch


def find_model_file(model_dir: Path) -> Path | None:
    path = model_dir / MODEL_FILE
    return path if path.is_file() else None


def model_fn(model_dir: str) -> Any:
    path = find_model_file(Path(model_dir))
    if path is None:
        raise ModelLoadError(f"No PyTorch model in {model_dir}: expected {EXPECTED}")
    torch = require("torch", framework=NAME, model_dir=model_dir, extra=EXTRA)
    try:
        # CPU only: coldbrew's workers have no GPU, and a model saved on a GPU must still load.
        model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        if _saved_with_torch_save(path):
            raise ModelLoadError(
                f"{MODEL_FILE} was saved with torch.save (an eager module or a state_dict), not as "
                "TorchScript, and the default PyTorch model_fn loads only TorchScript: define "
                "model_fn(model_dir) in code/inference.py that builds the module and loads it, or save "
                "the model with torch.jit.script(model).save('model.pt') (or torch.jit.trace)"
            ) from exc
        raise ModelLoadError(f"could not load {path} as TorchScript: {one_line(exc)}") from exc
    model.eval()
    return model


def _saved_with_torch_save(path: Path) -> bool:
    """Whether ``path`` looks like ``torch.save`` output rather than a damaged file.

    torch.jit.load reports both as a terse "PytorchStreamReader failed ..." error, which does
    not tell the user that the fix is a model_fn. A TorchScript archive holds ``constants.pkl``
    next to ``data.pkl``; torch.save's zip holds only ``data.pkl``; the legacy (pre-1.6, or
    ``_use_new_zipfile_serialization=False``) format is a bare pickle.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = {name.rsplit("/", 1)[-1] for name in archive.namelist()}
            return "data.pkl" in names and "constants.pkl" not in names
        with path.open("rb") as f:
            return f.read(1) == b"\x80"  # the PROTO opcode every pickle of protocol 2+ starts with
    except (OSError, zipfile.BadZipFile):
        return False


def predict_fn(data: Any, model: Any) -> Any:
    import torch  # loaded already: by model_fn, or by the user's model_fn that built a torch module

    if isinstance(data, torch.Tensor):
        tensor = data  # from a user's input_fn: its dtype and device are the user's choice
    else:
        import numpy as np

        # The default input_fn gives float64; models' weights are float32 almost always.
        tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    if getattr(model, "training", False):
        # A user's model_fn may forget eval(); dropout and batch norm would then make predictions
        # random. The SageMaker toolkit calls eval() before every prediction too.
        model.eval()
    with torch.inference_mode():
        output = model(tensor)
    return _to_numpy(output, torch)


def _to_numpy(output: Any, torch: Any) -> Any:
    """Tensors (also inside tuples, lists and dicts) as numpy arrays, which the default encoders write."""
    if isinstance(output, torch.Tensor):
        output = output.detach().cpu()
        # numpy has no bfloat16; float32 holds every bfloat16 value exactly.
        return (output.float() if output.dtype == torch.bfloat16 else output).numpy()
    if isinstance(output, (tuple, list)):
        return [_to_numpy(item, torch) for item in output]
    if isinstance(output, dict):
        return {key: _to_numpy(value, torch) for key, value in output.items()}
    return output
