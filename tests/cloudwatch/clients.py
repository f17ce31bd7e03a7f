"""CloudWatch clients of each protocol, configured only by ``AWS_ENDPOINT_URL``.

botocore 1.43 picks, from CloudWatch's ``protocols`` (``smithy-rpc-v2-cbor``, ``json``, ``query``),
the first in its own priority order, which is ``json``. To speak the others as the clients that
send them do, a test loads botocore's CloudWatch model with ``protocol``/``protocols`` set to one
of them, from a data path searched before botocore's own: the client's serializer and parser are
then botocore's real ones for that protocol.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.config import Config

PROTOCOLS = ("smithy-rpc-v2-cbor", "json", "query")
DIMENSIONS = ("EndpointName", "VariantName")


def cloudwatch(protocol: str | None, models: Path, **config: Any) -> Any:
    """A boto3 ``cloudwatch`` client (endpoint from the environment) speaking ``protocol``; ``config``
    goes to botocore's ``Config`` (``parameter_validation=False`` to send what botocore would refuse)."""
    session = botocore.session.get_session()
    if protocol is not None:
        # Read with a session of its own: the loader caches what it loaded, search paths and all.
        data = copy.deepcopy(botocore.session.get_session().get_service_data("cloudwatch"))
        data["metadata"]["protocol"] = protocol
        data["metadata"]["protocols"] = [protocol]
        directory = models / protocol
        version_dir = directory / "cloudwatch" / data["metadata"]["apiVersion"]
        version_dir.mkdir(parents=True, exist_ok=True)
        (version_dir / "service-2.json").write_text(json.dumps(data))
        session.get_component("data_loader").search_paths.insert(0, str(directory))
    client = boto3.session.Session(botocore_session=session).client(
        "cloudwatch",
        region_name="us-east-1",
        aws_access_key_id="any",
        aws_secret_access_key="any",
        config=Config(retries={"total_max_attempts": 1}, **config),
    )
    assert client.meta.service_model.resolved_protocol == (protocol or "json")
    return client


def dimensions(endpoint: str, variant: str = "AllTraffic") -> list[dict[str, str]]:
    return [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]
