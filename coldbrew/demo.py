"""The demo endpoint ``coldbrew-demo``: a scikit-learn regressor trained on a bundled dataset."""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path
from typing import Any

from coldbrew.control.service import ControlPlane, Operation, RequestContext
from coldbrew.errors import ValidationException

log = logging.getLogger("coldbrew")

DEMO_NAME = "coldbrew-demo"


def build_demo_archive(directory: Path) -> Path:
    """Train a small RandomForestRegressor on load_diabetes and pack it as SageMaker would."""
    import joblib
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    archive = directory / "model.tar.gz"
    if archive.exists():
        return archive
    directory.mkdir(parents=True, exist_ok=True)
    features, target = load_diabetes(return_X_y=True)
    model = RandomForestRegressor(n_estimators=50, random_state=0).fit(features, target)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    partial = archive.with_suffix(".partial")
    with tarfile.open(partial, "w:gz") as tar:
        info = tarfile.TarInfo("model.joblib")
        info.size = buffer.tell()
        buffer.seek(0)
        tar.addfile(info, buffer)
    partial.rename(archive)
    return archive


def deploy_demo(control: ControlPlane, context: RequestContext, data_dir: Path) -> None:
    """Create the demo model, config and endpoint unless they already exist."""
    archive = build_demo_archive(data_dir / "demo")
    steps: list[tuple[Operation, dict[str, Any]]] = [
        (
            control.create_model,
            {"ModelName": DEMO_NAME, "PrimaryContainer": {"ModelDataUrl": archive.as_uri()}},
        ),
        (
            control.create_endpoint_config,
            {
                "EndpointConfigName": DEMO_NAME,
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": DEMO_NAME,
                        "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 5},
                    }
                ],
            },
        ),
        (control.create_endpoint, {"EndpointName": DEMO_NAME, "EndpointConfigName": DEMO_NAME}),
    ]
    for create, request in steps:
        try:
            create(context, request)
        except ValidationException as exc:
            if "already existing" not in exc.message:
                raise
    log.info("demo endpoint %s deployed from %s", DEMO_NAME, archive)
