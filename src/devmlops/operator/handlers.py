"""kopf handlers in an explicit registry: ModelDeployment -> model server child + status conditions."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import kopf
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.operator.conditions import set_condition
from devmlops.operator.kserve import build_inference_service

__all__ = ["build_registry"]

GROUP, VERSION, PLURAL = "devmlops.io", "v1alpha1", "modeldeployments"
_KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _upsert_inference_service(api: k8s.CustomObjectsApi, child: dict[str, Any]) -> str:
    """Create the child, or patch it to the wanted spec; return what was done."""
    group, version, plural = _KSERVE
    namespace, name = child["metadata"]["namespace"], child["metadata"]["name"]
    try:
        api.create_namespaced_custom_object(group, version, namespace, plural, child)
        return "created"
    except ApiException as exc:
        if exc.status != 409:
            raise
    current = cast(dict[str, Any], api.get_namespaced_custom_object(group, version, namespace, plural, name))
    if current.get("spec") == child["spec"] and all(
        current["metadata"].get("annotations", {}).get(k) == v for k, v in child["metadata"]["annotations"].items()
    ):
        return "unchanged"
    api.patch_namespaced_custom_object(
        group,
        version,
        namespace,
        plural,
        name,
        {
            "metadata": {
                "annotations": child["metadata"]["annotations"],
                "labels": child["metadata"]["labels"],
            },
            "spec": child["spec"],
        },
    )
    return "updated"


def build_registry(api_client: k8s.ApiClient) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    custom = k8s.CustomObjectsApi(api_client)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """An explicit registry has no default login: in-cluster account first, then KUBECONFIG."""
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(
            **kwargs
        )
        return info

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    def reconcile(body: kopf.Body, status: kopf.Status, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        generation = int(body.metadata.get("generation") or 0)
        conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
        now = _now()
        conditions = set_condition(
            conditions,
            type_="Admitted",
            status="True",
            reason="AdmissionWebhook",
            message="the devmlops admission webhook admitted this ModelDeployment",
            generation=generation,
            now=now,
        )
        kind = body.spec.get("runtime", {}).get("kind")
        if kind != "kserve":
            conditions = set_condition(
                conditions,
                type_="Degraded",
                status="True",
                reason="UnsupportedRuntime",
                message=f"runtime.kind {kind!r} has no child builder yet; expected 'kserve'",
                generation=generation,
                now=now,
            )
            patch.status.update({"conditions": conditions, "observedGeneration": generation, "phase": "Degraded"})
            kopf.warn(body, reason="UnsupportedRuntime", message=f"runtime.kind {kind!r} is not served yet")
            return
        child = build_inference_service(dict(body))
        kopf.adopt(child, owner=body)
        action = _upsert_inference_service(custom, child)
        logger.info("InferenceService %s %s", child["metadata"]["name"], action)
        if action != "unchanged":
            kopf.info(body, reason=f"Child{action.capitalize()}", message=f"InferenceService {action}")
        conditions = set_condition(
            conditions,
            type_="ServingReady",
            status="Unknown",
            reason="WaitingForChild",
            message="waiting for the InferenceService to report Ready",
            generation=generation,
            now=now,
        )
        patch.status.update(
            {
                "conditions": conditions,
                "observedGeneration": generation,
                "phase": "Admitted",
                "child": {
                    "apiVersion": child["apiVersion"],
                    "kind": child["kind"],
                    "name": child["metadata"]["name"],
                },
            }
        )

    return registry
