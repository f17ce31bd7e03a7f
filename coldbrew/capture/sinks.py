"""Where capture files go: the embedded S3 store directly, or an external S3 through boto3.

The embedded store is written in-process (no HTTP hop through the gateway's own port), all of a
flush's files in one index commit; an external S3 goes through boto3, configured the standard way
(``AWS_ENDPOINT_URL_S3``, credentials). Every method blocks: the writer's thread calls them.
"""

from __future__ import annotations

from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from coldbrew.artifacts.s3 import make_client
from coldbrew.s3 import S3Store
from coldbrew.s3.checksums import Digests
from coldbrew.s3.index import ObjectMeta

CONTENT_TYPE = "application/jsonl"

NewFile = tuple[str, str, bytes]
"""(bucket, key, body) of a capture file."""


class Sink(Protocol):
    def write_many(self, files: list[NewFile]) -> list[str | None]:
        """Write each file; per file, why it could not be written, if it could not."""


class EmbeddedSink:
    def __init__(self, store: S3Store) -> None:
        self.store = store

    def write_many(self, files: list[NewFile]) -> list[str | None]:
        items = []
        try:
            for bucket, key, body in files:
                writer = self.store.writer(Digests())
                items.append((bucket, key.encode(), writer, ObjectMeta(content_type=CONTENT_TYPE)))
                writer.write(body)
        except BaseException:
            for _, _, writer, _ in items:
                writer.discard()
            raise
        errors = self.store.put_many(items)
        return [None if e is None else f"{e.code}: {e.message}" for e in errors]


class BotoSink:
    def __init__(self, client: Any | None = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        # Made on the writer's thread at the first flush: a server that never captures needs no
        # S3 client (or credentials).
        if self._client is None:
            self._client = make_client()
        return self._client

    def write_many(self, files: list[NewFile]) -> list[str | None]:
        errors: list[str | None] = []
        for bucket, key, body in files:
            try:
                self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=CONTENT_TYPE)
                errors.append(None)
            except ClientError as e:
                error = e.response.get("Error", {})
                errors.append(f"{error.get('Code')}: {error.get('Message', '')}")
            except BotoCoreError as e:
                errors.append(str(e))
        return errors
