"""The S3 client and the translation of its failures into messages a person can act on."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from .errors import ArtifactError

# Unreachable storage should fail an endpoint in seconds, not after minutes of retries.
_CONFIG = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2, "mode": "standard"})
_NOT_FOUND = {"404", "NotFound", "NoSuchKey"}
_DENIED = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def make_client(endpoint_url: str | None = None) -> Any:
    """An S3 client configured the standard way (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, credential
    variables and files); a private session because the default one is not thread-safe.

    With ``endpoint_url`` (coldbrew's own embedded S3) the client talks to that URL instead, with
    the gateway's own in-memory key (read-only S3; the server may have no credentials of its own).
    Over HTTPS it does not check the certificate: the URL is this process's own loopback port, and
    the certificate names the host clients use, not 127.0.0.1."""
    session = boto3.session.Session()
    region = session.region_name or "us-east-1"
    if endpoint_url is None:
        return session.client("s3", region_name=region, config=_CONFIG)
    from coldbrew.auth.internal import internal_credentials

    key_id, secret = internal_credentials()
    verify = False if endpoint_url.startswith("https:") else None
    if verify is False:
        warnings.filterwarnings("ignore", message="Unverified HTTPS request is being made to host '127")
    return session.client(
        "s3", region_name=region, config=_CONFIG, endpoint_url=endpoint_url,
        aws_access_key_id=key_id, aws_secret_access_key=secret, verify=verify,
    )  # fmt: skip


@contextmanager
def s3_errors(client: Any, url: str, bucket: str) -> Iterator[None]:
    """Turn any botocore failure inside the block into an ArtifactError about ``url``."""
    try:
        yield
    except ClientError as e:
        raise _client_error(client, e, url, bucket) from e
    except (NoCredentialsError, PartialCredentialsError) as e:
        raise ArtifactError(
            f"Could not fetch {url}: no usable AWS credentials ({e}). Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY or another standard credential source for the coldbrew server."
        ) from e
    except (BotoConnectionError, HTTPClientError) as e:
        raise ArtifactError(
            f"Could not reach S3 at {client.meta.endpoint_url} to fetch {url}: {_reason(e)}."
        ) from e
    except BotoCoreError as e:
        raise ArtifactError(f"Could not fetch {url} from S3: {e}.") from e


def _client_error(client: Any, e: ClientError, url: str, bucket: str) -> ArtifactError:
    error = e.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    # HEAD answers a bare 404 whether the key or the bucket is missing; ask which, to say what to fix.
    if code == "NoSuchBucket" or (code in _NOT_FOUND and not _bucket_exists(client, bucket)):
        return ArtifactError(f"Could not find model data at {url}: the bucket '{bucket}' does not exist.")
    if code in _NOT_FOUND:
        return ArtifactError(f"Could not find model data at {url}: the object does not exist.")
    if code in _DENIED or status == 403:
        return ArtifactError(
            f"Access to model data at {url} was denied ({code or status}): check the S3 credentials "
            "of the coldbrew server and the bucket policy."
        )
    detail = f"{code or status} {error.get('Message', '')}".strip()
    return ArtifactError(f"S3 refused to serve {url}: {detail}.")


def _bucket_exists(client: Any, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as e:
        return str(e.response.get("Error", {}).get("Code")) not in ({"NoSuchBucket"} | _NOT_FOUND)
    except BotoCoreError:
        pass  # cannot tell; the caller's own message still holds
    return True


def _reason(e: BaseException) -> str:
    # botocore wraps urllib3 wraps socket errors; the innermost strerror ("Connection refused") is
    # what a person needs, the wrappers' reprs are noise.
    seen: BaseException | None = e
    for _ in range(10):  # chains are short; the bound only guards against a cycle
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.rstrip(".")
        kwargs = getattr(seen, "kwargs", None)
        wrapped = kwargs.get("error") if isinstance(kwargs, dict) else None
        seen = wrapped if isinstance(wrapped, BaseException) else seen.__cause__ or seen.__context__
    return str(e).rstrip(".")
