"""Reading async inputs and writing results: in-process for the embedded S3, boto3 otherwise.

The embedded store is read and written directly (no HTTP hop through the gateway's own port, which
would cost the drain about half its throughput); an external S3 goes through boto3, configured the
standard way (``AWS_ENDPOINT_URL_S3``, credentials). Each result object carries the id of the
request it answers in its metadata, so after a crash the dispatcher can tell its own earlier result
from an unrelated object at the same key.

Every method blocks: call them from worker threads.
"""

from __future__ import annotations

from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from coldbrew.artifacts.s3 import make_client
from coldbrew.s3 import S3Store
from coldbrew.s3.checksums import Digests
from coldbrew.s3.errors import S3Error
from coldbrew.s3.index import ObjectMeta
from coldbrew.serving.targets import S3Url

REQUEST_ID_META = "coldbrew-request-id"


NewObject = tuple[S3Url, bytes, str, str]
"""(url, body, content type, request id) of a result object to write."""


class ObjectError(Exception):
    """An input that cannot be read or a result that cannot be written; ``str()`` says why."""


class TooLarge(ObjectError):
    pass


class Objects(Protocol):
    def size(self, url: S3Url) -> int | None:
        """The object's size, None if there is no such key (ObjectError if the bucket is missing)."""

    def read(self, url: S3Url, limit: int) -> tuple[bytes, str | None]:
        """Body and content type; TooLarge past ``limit`` bytes."""

    def written_by(self, url: S3Url) -> str | None:
        """The request id a result object at ``url`` was written for, None if there is none."""

    def write(self, url: S3Url, body: bytes, content_type: str, request_id: str) -> None: ...

    def write_many(self, objects: list[NewObject]) -> list[ObjectError | None]:
        """``write`` for each; per object, why it could not be written, if it could not."""


def _too_large(url: S3Url, size: int, limit: int) -> TooLarge:
    return TooLarge(f"The input {url} is {size:,} bytes; asynchronous inference takes at most {limit:,}.")


class EmbeddedObjects:
    def __init__(self, store: S3Store) -> None:
        self.store = store

    def size(self, url: S3Url) -> int | None:
        try:
            return self.store.head(url.bucket, url.key.encode()).size
        except S3Error as e:
            if e.code == "NoSuchKey":
                return None
            raise ObjectError(f"Could not read {url}: {e.message}") from None

    def read(self, url: S3Url, limit: int) -> tuple[bytes, str | None]:
        try:
            row, content = self.store.open(url.bucket, url.key.encode())
        except S3Error as e:
            raise ObjectError(f"Could not read {url}: {e.message}") from None
        with content:
            if row.size > limit:
                raise _too_large(url, row.size, limit)
            return content.read(row.size), row.meta.content_type

    def written_by(self, url: S3Url) -> str | None:
        try:
            row = self.store.head(url.bucket, url.key.encode())
        except S3Error:
            return None
        return row.meta.user.get(REQUEST_ID_META)

    def write(self, url: S3Url, body: bytes, content_type: str, request_id: str) -> None:
        (error,) = self.write_many([(url, body, content_type, request_id)])
        if error is not None:
            raise error

    def write_many(self, objects: list[NewObject]) -> list[ObjectError | None]:
        """One index commit for all of them (each content file is still its own, fsynced)."""
        items = []
        try:
            for url, body, content_type, request_id in objects:
                writer = self.store.writer(Digests())
                items.append((url.bucket, url.key.encode(), writer, _meta(content_type, request_id)))
                writer.write(body)
        except BaseException:
            for _, _, writer, _ in items:
                writer.discard()
            raise
        errors = self.store.put_many(items)
        return [
            None if e is None else ObjectError(f"Could not write {url}: {e.message}")
            for (url, *_), e in zip(objects, errors, strict=True)
        ]


def _meta(content_type: str, request_id: str) -> ObjectMeta:
    return ObjectMeta(content_type=content_type, user={REQUEST_ID_META: request_id})


class BotoObjects:
    def __init__(self, client: Any | None = None) -> None:
        self.client = client or make_client()

    def _error(self, verb: str, url: S3Url, e: Exception) -> ObjectError:
        if isinstance(e, ClientError):
            error = e.response.get("Error", {})
            return ObjectError(
                f"Could not {verb} {url}: {error.get('Code')} {error.get('Message', '')}".strip()
            )
        return ObjectError(f"Could not {verb} {url}: {e}")

    def size(self, url: S3Url) -> int | None:
        try:
            return int(self.client.head_object(Bucket=url.bucket, Key=url.key)["ContentLength"])
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error("read", url, e) from None
        except BotoCoreError as e:
            raise self._error("read", url, e) from None

    def read(self, url: S3Url, limit: int) -> tuple[bytes, str | None]:
        try:
            response = self.client.get_object(Bucket=url.bucket, Key=url.key)
            size = int(response["ContentLength"])
            if size > limit:
                response["Body"].close()
                raise _too_large(url, size, limit)
            return response["Body"].read(), response.get("ContentType")
        except (ClientError, BotoCoreError) as e:
            raise self._error("read", url, e) from None

    def written_by(self, url: S3Url) -> str | None:
        try:
            head = self.client.head_object(Bucket=url.bucket, Key=url.key)
        except (ClientError, BotoCoreError):
            return None
        value = head.get("Metadata", {}).get(REQUEST_ID_META)
        return str(value) if value is not None else None

    def write(self, url: S3Url, body: bytes, content_type: str, request_id: str) -> None:
        try:
            self.client.put_object(
                Bucket=url.bucket, Key=url.key, Body=body, ContentType=content_type,
                Metadata={REQUEST_ID_META: request_id},
            )  # fmt: skip
        except (ClientError, BotoCoreError) as e:
            raise self._error("write", url, e) from None

    def write_many(self, objects: list[NewObject]) -> list[ObjectError | None]:
        errors: list[ObjectError | None] = []
        for url, body, content_type, request_id in objects:
            try:
                self.write(url, body, content_type, request_id)
                errors.append(None)
            except ObjectError as e:
                errors.append(e)
        return errors
