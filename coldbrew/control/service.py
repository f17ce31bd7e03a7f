"""The SageMaker control-plane operations, one method each, over the SQLite store.

Methods take the already-validated request dict and return the response dict in the shapes of
botocore's service model. Long work (fetching model data, starting workers) never happens here:
the reconciler does it in the background and these calls return at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coldbrew.async_inference import config as async_config
from coldbrew.capture import config as capture_config
from coldbrew.control import arns
from coldbrew.control.deployment import Deployment, variant_summaries, with_variant_status
from coldbrew.control.paging import ListQuery, list_rows
from coldbrew.control.quotas import Quotas
from coldbrew.control.reconciler import Reconciler
from coldbrew.control.store import Store, dumps, loads
from coldbrew.control.validation import check_weights, validate_production_variants
from coldbrew.errors import (
    ColdbrewError,
    ModelNotReadyException,
    ResourceLimitExceeded,
    ValidationError,
    ValidationException,
)
from coldbrew.serving.instances import DEFAULT as DEFAULT_INSTANCE
from coldbrew.wire.constraints import shown

MAX_TAGS = 50


@dataclass(frozen=True)
class RequestContext:
    region: str
    account: str

    def arn(self, resource_type: str, name: str) -> str:
        return arns.make_arn(self.region, self.account, resource_type, name)


Operation = Callable[[RequestContext, dict[str, Any]], dict[str, Any]]

_NOUNS = {
    arns.MODEL: "model",
    arns.ENDPOINT_CONFIG: "endpoint configuration",
    arns.ENDPOINT: "endpoint",
    arns.TRANSFORM_JOB: "transform job",
}
_TABLES = {
    arns.MODEL: "models",
    arns.ENDPOINT_CONFIG: "endpoint_configs",
    arns.ENDPOINT: "endpoints",
    arns.TRANSFORM_JOB: "transform_jobs",
}


def _not_found(ctx: RequestContext, resource_type: str, name: str) -> ValidationException:
    return ValidationException(f'Could not find {_NOUNS[resource_type]} "{ctx.arn(resource_type, name)}".')


def _already_exists(ctx: RequestContext, resource_type: str, name: str) -> ValidationException:
    return ValidationException(
        f'Cannot create already existing {_NOUNS[resource_type]} "{ctx.arn(resource_type, name)}".'
    )


class ControlPlane:
    def __init__(self, store: Store, reconciler: Reconciler, quotas: Quotas | None = None) -> None:
        self.store = store
        self.reconciler = reconciler
        self.quotas = quotas or Quotas()
        self.operations: dict[str, Operation] = {
            "CreateModel": self.create_model,
            "DescribeModel": self.describe_model,
            "ListModels": self.list_models,
            "DeleteModel": self.delete_model,
            "CreateEndpointConfig": self.create_endpoint_config,
            "DescribeEndpointConfig": self.describe_endpoint_config,
            "ListEndpointConfigs": self.list_endpoint_configs,
            "DeleteEndpointConfig": self.delete_endpoint_config,
            "CreateEndpoint": self.create_endpoint,
            "DescribeEndpoint": self.describe_endpoint,
            "ListEndpoints": self.list_endpoints,
            "UpdateEndpoint": self.update_endpoint,
            "UpdateEndpointWeightsAndCapacities": self.update_endpoint_weights_and_capacities,
            "DeleteEndpoint": self.delete_endpoint,
            "AddTags": self.add_tags,
            "ListTags": self.list_tags,
            "DeleteTags": self.delete_tags,
        }

    # --- shared helpers ------------------------------------------------------------------------

    def _row(self, ctx: RequestContext, resource_type: str, name: str) -> Any:
        row = self.store.query_one(
            f"SELECT * FROM {_TABLES[resource_type]} WHERE name_key = ?", [name.lower()]
        )
        if row is None:
            raise _not_found(ctx, resource_type, name)
        return row

    def _insert(
        self,
        ctx: RequestContext,
        resource_type: str,
        name: str,
        columns: dict[str, Any],
        tags: list[dict[str, str]],
    ) -> str:
        arn = ctx.arn(resource_type, name)
        table = _TABLES[resource_type]
        values = {"name_key": name.lower(), "name": name, "arn": arn, "created_at": time.time(), **columns}
        with self.store.transaction() as conn:
            if conn.execute(f"SELECT 1 FROM {table} WHERE name_key = ?", [name.lower()]).fetchone():
                raise _already_exists(ctx, resource_type, name)
            self.quotas.check_create(conn, resource_type)
            placeholders = ", ".join("?" for _ in values)
            conn.execute(
                f"INSERT INTO {table} ({', '.join(values)}) VALUES ({placeholders})", list(values.values())
            )
            self._write_tags(conn, arn, tags)
        return arn

    def _delete(self, ctx: RequestContext, resource_type: str, name: str) -> None:
        with self.store.transaction() as conn:
            row = conn.execute(
                f"SELECT arn FROM {_TABLES[resource_type]} WHERE name_key = ?", [name.lower()]
            ).fetchone()
            if row is None:
                raise _not_found(ctx, resource_type, name)
            conn.execute(f"DELETE FROM {_TABLES[resource_type]} WHERE name_key = ?", [name.lower()])
            conn.execute("DELETE FROM tags WHERE arn = ?", [row["arn"]])

    @staticmethod
    def _write_tags(conn: Any, arn: str, tags: list[dict[str, str]]) -> None:
        existing = {
            r["key"]: r["position"]
            for r in conn.execute("SELECT key, position FROM tags WHERE arn = ?", [arn])
        }
        new_keys = {tag["Key"] for tag in tags} - existing.keys()
        if len(existing) + len(new_keys) > MAX_TAGS:
            raise ResourceLimitExceeded(
                f"A resource can have at most {MAX_TAGS} tags; this request would give {arn} "
                f"{len(existing) + len(new_keys)}."
            )
        position = max(existing.values(), default=-1) + 1
        for tag in tags:
            if tag["Key"] in existing:
                conn.execute(
                    "UPDATE tags SET value = ? WHERE arn = ? AND key = ?",
                    [tag.get("Value", ""), arn, tag["Key"]],
                )
                continue
            conn.execute(
                "INSERT INTO tags (arn, key, value, position) VALUES (?, ?, ?, ?)",
                [arn, tag["Key"], tag.get("Value", ""), position],
            )
            existing[tag["Key"]] = position
            position += 1

    @staticmethod
    def _page(
        rows: list[Any], token: str | None, key: str, summary: Callable[[Any], dict[str, Any]]
    ) -> dict[str, Any]:
        response: dict[str, Any] = {key: [summary(row) for row in rows]}
        if token is not None:
            response["NextToken"] = token
        return response

    # --- models --------------------------------------------------------------------------------

    def create_model(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        containers = request.get("Containers")
        if "PrimaryContainer" not in request and not containers:
            raise ValidationException("Either PrimaryContainer or Containers must be provided.")
        if "PrimaryContainer" in request and containers:
            raise ValidationException("Provide either PrimaryContainer or Containers, not both.")
        if containers and len(containers) > 1:
            raise ValidationException(
                "coldbrew serves single-container models; inference pipelines (Containers with more "
                "than one container) are not supported. Pass one container as PrimaryContainer."
            )
        spec = {k: v for k, v in request.items() if k != "Tags"}
        arn = self._insert(
            ctx, arns.MODEL, request["ModelName"], {"spec": dumps(spec)}, request.get("Tags", [])
        )
        return {"ModelArn": arn}

    def describe_model(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._row(ctx, arns.MODEL, request["ModelName"])
        spec = loads(row["spec"])
        spec.update(ModelName=row["name"], ModelArn=row["arn"], CreationTime=row["created_at"])
        spec.setdefault("EnableNetworkIsolation", False)
        return spec

    def list_models(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows, token = list_rows(self.store, ListQuery.from_request("models", request))
        return self._page(
            rows,
            token,
            "Models",
            lambda r: {"ModelName": r["name"], "ModelArn": r["arn"], "CreationTime": r["created_at"]},
        )

    def delete_model(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._delete(ctx, arns.MODEL, request["ModelName"])
        return {}

    # --- endpoint configs ----------------------------------------------------------------------

    def create_endpoint_config(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        variants = request["ProductionVariants"]
        validate_production_variants(variants)
        for variant in variants:
            if variant.get("InitialInstanceCount") is not None:
                self.quotas.check_instances(
                    variant["VariantName"], variant["InstanceType"], variant["InitialInstanceCount"]
                )
        if request.get("AsyncInferenceConfig") is not None:
            async_config.validate(request["AsyncInferenceConfig"], request["EndpointConfigName"])
        if request.get("DataCaptureConfig") is not None:
            capture_config.validate(request["DataCaptureConfig"], request["EndpointConfigName"])
        for variant in variants:
            if "ModelName" not in variant:
                raise ValidationException(f"Variant '{variant['VariantName']}' must name a ModelName.")
            self._row(ctx, arns.MODEL, variant["ModelName"])
        spec = {k: v for k, v in request.items() if k != "Tags"}
        arn = self._insert(
            ctx,
            arns.ENDPOINT_CONFIG,
            request["EndpointConfigName"],
            {"spec": dumps(spec)},
            request.get("Tags", []),
        )
        return {"EndpointConfigArn": arn}

    def describe_endpoint_config(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._row(ctx, arns.ENDPOINT_CONFIG, request["EndpointConfigName"])
        spec = loads(row["spec"])
        spec.update(
            EndpointConfigName=row["name"], EndpointConfigArn=row["arn"], CreationTime=row["created_at"]
        )
        return spec

    def list_endpoint_configs(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        rows, token = list_rows(self.store, ListQuery.from_request("endpoint_configs", request))
        return self._page(
            rows,
            token,
            "EndpointConfigs",
            lambda r: {
                "EndpointConfigName": r["name"],
                "EndpointConfigArn": r["arn"],
                "CreationTime": r["created_at"],
            },
        )

    def delete_endpoint_config(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self._delete(ctx, arns.ENDPOINT_CONFIG, request["EndpointConfigName"])
        return {}

    # --- endpoints -----------------------------------------------------------------------------

    def _snapshot(self, ctx: RequestContext, config_name: str) -> Deployment:
        config_row = self._row(ctx, arns.ENDPOINT_CONFIG, config_name)
        config = loads(config_row["spec"])
        models = {}
        for variant in config["ProductionVariants"]:
            model_row = self._row(ctx, arns.MODEL, variant["ModelName"])
            models[variant["ModelName"].lower()] = loads(model_row["spec"])
        deployment = Deployment(config_name=config_row["name"], config=config, models=models)
        errors = deployment.settings_errors()
        if errors:
            raise ValidationException("; ".join(errors))
        return deployment

    def create_endpoint(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        deployment = self._snapshot(ctx, request["EndpointConfigName"])
        now = time.time()
        arn = self._insert(
            ctx,
            arns.ENDPOINT,
            request["EndpointName"],
            {
                "modified_at": now,
                "status": "Creating",
                "config_name": deployment.config_name,
                "deployment": dumps(deployment.to_json()),
                "variants": dumps(variant_summaries(deployment, current=False)),
            },
            request.get("Tags", []),
        )
        self.reconciler.kick(request["EndpointName"].lower())
        return {"EndpointArn": arn}

    def describe_endpoint(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._row(ctx, arns.ENDPOINT, request["EndpointName"])
        response: dict[str, Any] = {
            "EndpointName": row["name"],
            "EndpointArn": row["arn"],
            "EndpointConfigName": row["config_name"],
            "EndpointStatus": row["status"],
            "CreationTime": row["created_at"],
            "LastModifiedTime": row["modified_at"],
        }
        variants = loads(row["variants"])
        # A pending deployment's variants are being created; the running ones serve meanwhile.
        has_pending = bool(row["pending_deployment"])
        if variants:
            shown_status = "InService" if has_pending else row["status"]
            response["ProductionVariants"] = with_variant_status(variants, shown_status, row["modified_at"])
        if row["failure_reason"]:
            response["FailureReason"] = row["failure_reason"]
        capture = Deployment.from_json(loads(row["deployment"])).config.get("DataCaptureConfig")
        if capture:
            response["DataCaptureConfig"] = capture_config.CaptureConfig.from_request(capture).describe()
        if has_pending:
            pending = Deployment.from_json(loads(row["pending_deployment"]))
            response["PendingDeploymentSummary"] = {
                "EndpointConfigName": pending.config_name,
                "ProductionVariants": with_variant_status(
                    variant_summaries(pending, current=False), row["status"], row["modified_at"], pending=True
                ),
                "StartTime": row["modified_at"],
            }
        return response

    def list_endpoints(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        query = ListQuery.from_request("endpoints", request)
        query.time_filter("modified_at", "<", request.get("LastModifiedTimeBefore"))
        query.time_filter("modified_at", ">", request.get("LastModifiedTimeAfter"))
        query.equals("status", request.get("StatusEquals"))
        rows, token = list_rows(self.store, query)
        return self._page(
            rows,
            token,
            "Endpoints",
            lambda r: {
                "EndpointName": r["name"],
                "EndpointArn": r["arn"],
                "CreationTime": r["created_at"],
                "LastModifiedTime": r["modified_at"],
                "EndpointStatus": r["status"],
            },
        )

    def endpoint_exists(self, key: str) -> bool:
        """Whether an endpoint of this lower-cased name exists (in any status)."""
        return self.store.query_one("SELECT 1 FROM endpoints WHERE name_key = ?", [key]) is not None

    def refusal_for(self, name: str, account: str) -> ColdbrewError:
        """Why endpoint ``name`` takes no invocations, for an invocation serving has no endpoint
        for (the invoke path reads the store only on this error path)."""
        row = self.store.query_one(
            "SELECT name, status, failure_reason FROM endpoints WHERE name_key = ?", [name.lower()]
        )
        if row is None or row["name"] != name:  # invocations match the name's case exactly
            return ValidationError(f"Endpoint {shown(name)} of account {account} not found.")
        status = row["status"]
        if status == "Failed":
            return ValidationError(
                f"Endpoint {name} of account {account} is Failed and takes no invocations: "
                f"{row['failure_reason']}"
            )
        if status in ("InService", "Updating"):
            # It served before the server restarted and is being deployed again: the client's
            # request is fine, and a retry in a moment will be served.
            return ModelNotReadyException(
                f"Endpoint {name} of account {account} is being brought back after a restart of the "
                "server; retry the request in a moment."
            )
        return ValidationError(
            f"Endpoint {name} of account {account} is {status}; invoke it once it is InService."
        )

    def _require_in_service(self, ctx: RequestContext, row: Any) -> None:
        status = row["status"]
        if status in ("Creating", "Updating", "Deleting", "SystemUpdating", "RollingBack"):
            raise ValidationException(f'Cannot update in-progress endpoint "{row["arn"]}".')
        if status != "InService":
            raise ValidationException(
                f'Cannot update endpoint "{row["arn"]}" because its status is {status}; '
                "delete it and create it again."
            )

    def update_endpoint(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._row(ctx, arns.ENDPOINT, request["EndpointName"])
        self._require_in_service(ctx, row)
        deployment = self._snapshot(ctx, request["EndpointConfigName"])
        with self.store.transaction() as conn:
            updated = conn.execute(
                "UPDATE endpoints SET status = 'Updating', pending_config_name = ?, pending_deployment = ?, "
                "failure_reason = NULL, modified_at = ?, generation = generation + 1 "
                "WHERE name_key = ? AND status = 'InService'",
                [deployment.config_name, dumps(deployment.to_json()), time.time(), row["name_key"]],
            ).rowcount
        if not updated:
            raise ValidationException(f'Cannot update in-progress endpoint "{row["arn"]}".')
        self.reconciler.kick(row["name_key"])
        return {"EndpointArn": row["arn"]}

    def update_endpoint_weights_and_capacities(
        self, ctx: RequestContext, request: dict[str, Any]
    ) -> dict[str, Any]:
        row = self._row(ctx, arns.ENDPOINT, request["EndpointName"])
        self._require_in_service(ctx, row)
        variants = {v["VariantName"]: v for v in loads(row["variants"])}
        for desired in request["DesiredWeightsAndCapacities"]:
            name = desired["VariantName"]
            summary = variants.get(name)
            if summary is None:
                raise ValidationException(
                    f'The variant name(s) "{name}" is/are not present in endpoint "{row["arn"]}".'
                )
            if "DesiredWeight" in desired:
                summary["DesiredWeight"] = desired["DesiredWeight"]
            serverless = "DesiredServerlessConfig" in summary
            if "DesiredInstanceCount" in desired:
                if serverless:
                    raise ValidationException(
                        f"Variant '{name}' is serverless: change its capacity with ServerlessUpdateConfig, "
                        "not DesiredInstanceCount."
                    )
                instance = self._instance_type(row, name)
                self.quotas.check_instances(name, instance, desired["DesiredInstanceCount"])
                summary["DesiredInstanceCount"] = desired["DesiredInstanceCount"]
            if "ServerlessUpdateConfig" in desired:
                if not serverless:
                    raise ValidationException(
                        f"Variant '{name}' is not serverless; use DesiredInstanceCount."
                    )
                config = {**summary["DesiredServerlessConfig"], **desired["ServerlessUpdateConfig"]}
                if config.get("ProvisionedConcurrency", 0) > config["MaxConcurrency"]:
                    raise ValidationException(
                        f"ProvisionedConcurrency ({config['ProvisionedConcurrency']}) of variant '{name}' "
                        f"must not exceed its MaxConcurrency ({config['MaxConcurrency']})."
                    )
                summary["DesiredServerlessConfig"] = config
        check_weights({n: v["DesiredWeight"] for n, v in variants.items()}, "DesiredWeight")
        with self.store.transaction() as conn:
            updated = conn.execute(
                "UPDATE endpoints SET status = 'Updating', variants = ?, failure_reason = NULL, "
                "modified_at = ?, "
                "generation = generation + 1 WHERE name_key = ? AND status = 'InService'",
                [dumps(list(variants.values())), time.time(), row["name_key"]],
            ).rowcount
        if not updated:
            raise ValidationException(f'Cannot update in-progress endpoint "{row["arn"]}".')
        self.reconciler.kick(row["name_key"])
        return {"EndpointArn": row["arn"]}

    @staticmethod
    def _instance_type(row: Any, variant: str) -> str:
        """The InstanceType endpoint ``row``'s variant was deployed with."""
        deployment = Deployment.from_json(loads(row["deployment"]))
        for spec in deployment.variants:
            if spec.name == variant and spec.instance_type:
                return spec.instance_type
        return DEFAULT_INSTANCE.name  # as serving sizes a variant of no known type

    def delete_endpoint(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        row = self._row(ctx, arns.ENDPOINT, request["EndpointName"])
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE endpoints SET status = 'Deleting', modified_at = ?, generation = generation + 1 "
                "WHERE name_key = ?",
                [time.time(), row["name_key"]],
            )
        self.reconciler.kick(row["name_key"])
        return {}

    # --- tags ----------------------------------------------------------------------------------

    def _tagged_arn(self, ctx: RequestContext, arn: str) -> str:
        parsed = arns.parse_arn(arn)
        if parsed is None or parsed.resource_type not in _TABLES:
            raise ValidationException(
                f'Could not find resource "{arn}": coldbrew tags models, endpoint configurations, '
                "endpoints and transform jobs."
            )
        row = self.store.query_one(
            f"SELECT arn FROM {_TABLES[parsed.resource_type]} WHERE name_key = ?", [parsed.name.lower()]
        )
        if row is None:
            raise _not_found(RequestContext(parsed.region, parsed.account), parsed.resource_type, parsed.name)
        return str(row["arn"])

    def add_tags(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        arn = self._tagged_arn(ctx, request["ResourceArn"])
        with self.store.transaction() as conn:
            self._write_tags(conn, arn, request["Tags"])
        return {"Tags": request["Tags"]}

    def list_tags(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        arn = self._tagged_arn(ctx, request["ResourceArn"])
        start = 0
        token = request.get("NextToken")
        if token:
            # A tag's position: digits only, and small enough for SQLite's 64-bit integers.
            if not (token.isascii() and token.isdigit() and len(token) <= 9):
                raise ValidationException(
                    f"Invalid NextToken '{shown(token, 64)}': pass the NextToken of a previous "
                    "ListTags response."
                )
            start = int(token)
        limit = request.get("MaxResults", MAX_TAGS)
        rows = self.store.query(
            "SELECT key, value, position FROM tags WHERE arn = ? AND position >= ? ORDER BY position LIMIT ?",
            [arn, start, limit + 1],
        )
        response: dict[str, Any] = {"Tags": [{"Key": r["key"], "Value": r["value"]} for r in rows[:limit]]}
        if len(rows) > limit:
            response["NextToken"] = str(rows[limit]["position"])
        return response

    def delete_tags(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        arn = self._tagged_arn(ctx, request["ResourceArn"])
        with self.store.transaction() as conn:
            conn.executemany(
                "DELETE FROM tags WHERE arn = ? AND key = ?", [[arn, k] for k in request["TagKeys"]]
            )
        return {}
