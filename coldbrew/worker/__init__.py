"""The worker: one execution environment serving the SageMaker container contract.

``run_worker`` (in :mod:`coldbrew.worker.main`), told what to serve by a :class:`WorkerLaunch`,
loads a model through the inference toolkit (:mod:`coldbrew.worker.handlers`) and serves
``GET /ping`` and ``POST /invocations``. Importing this package starts nothing and imports no ML
library, so a zygote can pre-import it and fork.
"""

from __future__ import annotations

from coldbrew.worker.messages import WorkerLaunch

__all__ = ["WorkerLaunch"]
