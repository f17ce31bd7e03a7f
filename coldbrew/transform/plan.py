"""Which objects a job reads and where each one's output goes, as SageMaker names them.

``S3Prefix``: every object whose key begins with the URI's key; its output is
``<S3OutputPath>/<key relative to the prefix's folder>.out`` (``s3://b/in/`` and ``in/x/a.csv`` give
``<S3OutputPath>/x/a.csv.out``). ``ManifestFile``: the URI names a JSON manifest,
``[{"prefix": "s3://bucket/folder/"}, "relative/key", ...]``, and each relative key is an input
whose output is ``<S3OutputPath>/<relative key>.out``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from coldbrew.serving.targets import S3Url
from coldbrew.transform.spec import TransformJobSpec
from coldbrew.transform.storage import Storage, StorageError

MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_OBJECTS = 1_000_000


class PlanError(Exception):
    """The job's input cannot be planned; ``str()`` is its FailureReason."""


@dataclass(frozen=True)
class PlannedObject:
    position: int
    input: S3Url
    output: S3Url


def plan(spec: TransformJobSpec, storage: Storage) -> list[PlannedObject]:
    """Blocking: the job's inputs in order, each with its output location."""
    if spec.data_type == "ManifestFile":
        prefix, relatives = _manifest(spec.input_url, storage)
        pairs = [(_under(prefix, rel), rel) for rel in relatives]
    else:
        folder = spec.input_url.key[: spec.input_url.key.rfind("/") + 1]
        pairs = []
        try:
            for key in storage.keys(spec.input_url):
                if key.endswith("/"):
                    continue  # a folder marker, as the S3 console creates them
                pairs.append((S3Url(spec.input_url.bucket, key), key[len(folder) :]))
                if len(pairs) > MAX_OBJECTS:
                    raise PlanError(
                        f"More than {MAX_OBJECTS:,} objects under {spec.input_url}: split the job."
                    )
        except StorageError as e:
            raise PlanError(str(e)) from None
    if not pairs:
        raise PlanError(f"No S3 objects found under S3 URL {spec.input_url}.")
    return [
        PlannedObject(i, url, spec.output_url.join(relative + ".out"))
        for i, (url, relative) in enumerate(pairs)
    ]


def _under(prefix: S3Url, relative: str) -> S3Url:
    return S3Url(prefix.bucket, prefix.key + relative)


def _manifest(url: S3Url, storage: Storage) -> tuple[S3Url, list[str]]:
    try:
        with storage.open(url) as stream:
            text = stream.read(MAX_MANIFEST_BYTES + 1)
    except StorageError as e:
        raise PlanError(f"The manifest could not be read: {e}") from None
    if len(text) > MAX_MANIFEST_BYTES:
        raise PlanError(f"The manifest {url} is larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MB.")
    try:
        entries = json.loads(text)
    except ValueError as e:
        raise PlanError(f"The manifest {url} is not valid JSON: {e}.") from None
    if (
        not isinstance(entries, list)
        or not entries
        or not isinstance(entries[0], dict)
        or not isinstance(entries[0].get("prefix"), str)
    ):
        raise PlanError(
            f"The manifest {url} must be a JSON array whose first element is "
            '{"prefix": "s3://bucket/folder/"} and whose other elements are keys relative to that prefix.'
        )
    prefix = S3Url.parse(entries[0]["prefix"])
    if prefix is None:
        raise PlanError(f"The manifest's prefix {entries[0]['prefix'][:200]!r} is not an s3:// URI.")
    relatives = entries[1:]
    for rel in relatives:
        if not isinstance(rel, str) or not rel:
            raise PlanError(
                f"The manifest {url} lists {str(rel)[:100]!r}: each input must be a non-empty key."
            )
    return prefix, relatives
