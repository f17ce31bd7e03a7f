"""Large joblib models are memory-mapped from the artifact cache; small ones are read."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import Ridge

from coldbrew.worker.frameworks import sklearn as sk


def test_large_models_are_memory_mapped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    model = Ridge().fit(rng.normal(size=(50, 4)), rng.normal(size=50))
    joblib.dump(model, tmp_path / "model.joblib")
    small = sk.model_fn(str(tmp_path))
    assert not isinstance(small.coef_, np.memmap)

    model.coef_ = rng.normal(size=sk.MMAP_MIN_BYTES // 8 + 1)
    joblib.dump(model, tmp_path / "model.joblib")
    large = sk.model_fn(str(tmp_path))
    assert isinstance(large.coef_, np.memmap)
    np.testing.assert_array_equal(large.coef_, model.coef_)

    joblib.dump(model, tmp_path / "model.joblib", compress=1)  # cannot be mapped: read instead
    compressed = sk.model_fn(str(tmp_path))
    np.testing.assert_array_equal(compressed.coef_, model.coef_)
