"""The warm-up request a template's spare answers before it serves (issue 18, point 3): which
models get one (none whose predict runs the user's code), and the rehearsal through the worker's
real protocol on a socket pair."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from coldbrew.worker.app import WorkerApp
from coldbrew.worker.frameworks.sklearn import warm_up_body
from coldbrew.worker.handlers import load_handler
from coldbrew.worker.main import Loaded, prepare
from coldbrew.worker.server import prepared_runner, rehearse
from tests.worker.conftest import write_code

X, Y = load_diabetes(return_X_y=True)


class Doubler(TransformerMixin, BaseEstimator):  # the user's own class, pickled into the model
    def fit(self, x: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, x: Any) -> Any:
        return x * 2


def _double(x: Any) -> Any:
    return x * 2


@pytest.fixture(autouse=True)
def isolated_imports() -> Iterator[None]:
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def test_library_models_get_a_row_of_zeros_of_their_width() -> None:
    forest = RandomForestRegressor(n_estimators=3, random_state=0).fit(X, Y)
    assert warm_up_body(forest) == b"0,0,0,0,0,0,0,0,0,0"
    pipeline = make_pipeline(FunctionTransformer(np.log1p), StandardScaler(), Ridge()).fit(X[:, :3] + 1, Y)
    assert warm_up_body(pipeline) == b"0,0,0"


@pytest.mark.parametrize(
    "model",
    [
        make_pipeline(Doubler(), Ridge()),
        make_pipeline(FunctionTransformer(_double), Ridge()),
        Doubler(),
    ],
    ids=["user class in a pipeline", "user function in a FunctionTransformer", "user estimator"],
)
def test_models_with_the_users_code_get_none(model: Any) -> None:
    model.fit(X, Y)
    assert warm_up_body(model) is None


def test_a_model_never_fitted_gets_none() -> None:
    assert warm_up_body(Ridge()) is None  # no n_features_in_: its width is unknown


def _in_a_thread_with_no_loop(body: Callable[[], None]) -> None:
    # A spare prepares in a fresh process with no event loop; an earlier test in this process may
    # have left one marked running on the main thread, so the body runs where none ever ran.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(body).result(timeout=60)


def _loaded(model_dir: Path) -> Loaded:
    return Loaded(load_handler(str(model_dir)), 0.0, running=0.0, loading=0.0, loaded=0.0)


def test_a_plain_model_is_rehearsed_through_the_protocol(tmp_path: Path) -> None:
    def body() -> None:
        forest = RandomForestRegressor(n_estimators=3, random_state=0).fit(X, Y)
        joblib.dump(forest, tmp_path / "model.joblib")
        prepared = prepare(_loaded(tmp_path))
        try:
            assert prepared.rehearsed
        finally:
            prepared.runner.close()

    _in_a_thread_with_no_loop(body)


def test_a_refused_rehearsal_is_reported_not_raised(tmp_path: Path) -> None:
    def body() -> None:
        joblib.dump(Ridge().fit(X, Y), tmp_path / "model.joblib")
        app = WorkerApp(load_handler(str(tmp_path)))
        runner = prepared_runner()
        try:
            assert not rehearse(runner, app, b"0,0,0")  # ten features expected: a 400
            assert not rehearse(runner, app, b"\xff\xfe")  # not CSV at all
            assert rehearse(runner, app, b"0,0,0,0,0,0,0,0,0,0")
        finally:
            runner.close()

    _in_a_thread_with_no_loop(body)


def test_the_users_code_never_runs_unasked(tmp_path: Path) -> None:
    def body() -> None:
        joblib.dump(Ridge().fit(X, Y), tmp_path / "model.joblib")
        marker = tmp_path / "predicted"
        write_code(
            tmp_path,
            f"""
            def predict_fn(data, model):
                open({str(marker)!r}, "w").close()
                return model.predict(data)
            """,
        )
        loaded = _loaded(tmp_path)
        assert loaded.handler.warm_up is None
        prepared = prepare(loaded)
        try:
            assert not prepared.rehearsed
            assert not marker.exists()
        finally:
            prepared.runner.close()

    _in_a_thread_with_no_loop(body)
