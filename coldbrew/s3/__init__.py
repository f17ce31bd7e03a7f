"""The embedded S3: a durable, file-backed store under the data dir, speaking S3's REST API on the
gateway's port (requests signed for ``s3``), so ``AWS_ENDPOINT_URL`` is all a client changes.

:mod:`.store` and :mod:`.multipart` hold the data (an SQLite index over immutable content files);
:mod:`.app` is the HTTP side. ``COLDBREW_S3=external`` leaves S3 to ``AWS_ENDPOINT_URL_S3`` or AWS.
"""

from __future__ import annotations

from .app import S3App
from .store import S3Store

__all__ = ["S3App", "S3Store"]
