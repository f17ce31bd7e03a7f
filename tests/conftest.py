from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ColdbrewServer, sklearn_archive


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdbrewServer]:
    """One coldbrew server per test module, on a fresh data dir."""
    srv = ColdbrewServer(tmp_path_factory.mktemp("coldbrew") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sm(server: ColdbrewServer) -> Any:
    return server.client("sagemaker")


@pytest.fixture(scope="session")
def model_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A scikit-learn model.tar.gz on disk and the fitted model it holds."""
    return sklearn_archive(tmp_path_factory.mktemp("model") / "model.tar.gz")
