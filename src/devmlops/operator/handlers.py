"""kopf handlers in an explicit registry: ModelDeployment -> model server child + status conditions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, cast

import kopf
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.operator.approvals import check_approval_state
from devmlops.operator.conditions import ConditionStatus, set_condition
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

    def reconcile_model(body: Mapping[str, Any], logger: Any) -> dict[str, Any]:
        """Bring the child in line with an admitted ModelDeployment; return the status to write."""
        status = body.get("status") or {}
        generation = int(body["metadata"].get("generation") or 0)
        now = _now()

        def condition(
            conditions: list[dict[str, Any]], type_: str, value: ConditionStatus, reason: str, message: str
        ) -> list[dict[str, Any]]:
            return set_condition(
                conditions, type_=type_, status=value, reason=reason, message=message, generation=generation, now=now
            )

        conditions = condition(
            list(status.get("conditions") or []),
            "Admitted",
            "True",
            "AdmissionWebhook",
            "the devmlops admission webhook admitted this ModelDeployment",
        )
        kind = (body.get("spec") or {}).get("runtime", {}).get("kind")
        if kind != "kserve":
            message = f"runtime.kind {kind!r} has no child builder yet; expected 'kserve'"
            conditions = condition(conditions, "Degraded", "True", "UnsupportedRuntime", message)
            return {"conditions": conditions, "observedGeneration": generation, "phase": "Degraded"}
        approval = check_approval_state(api_client, body)
        if approval.waiting:
            digest = body["spec"]["model"]["digest"]
            message = (
                f"risk tier requires a ModelApproval for {digest} by a second person "
                f"({', '.join(approval.required_by)}); not served until then"
            )
            conditions = condition(conditions, "AwaitingApproval", "True", "NoValidApproval", message)
            conditions = condition(conditions, "ServingReady", "False", "AwaitingApproval", "no child until approved")
            return {"conditions": conditions, "observedGeneration": generation, "phase": "AwaitingApproval"}
        if approval.required_by:
            conditions = condition(
                conditions,
                "AwaitingApproval",
                "False",
                "Approved",
                f"approved by {approval.state.approver} ({approval.state.name})",
            )
        child = build_inference_service(body)
        kopf.adopt(child, owner=kopf.Body(cast(kopf.RawBody, dict(body))))
        action = _upsert_inference_service(custom, child)
        logger.info("InferenceService %s %s", child["metadata"]["name"], action)
        conditions = condition(
            conditions, "ServingReady", "Unknown", "WaitingForChild", "waiting for the InferenceService to report Ready"
        )
        return {
            "conditions": conditions,
            "observedGeneration": generation,
            "phase": "Admitted",
            "child": {"apiVersion": child["apiVersion"], "kind": child["kind"], "name": child["metadata"]["name"]},
        }

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    def reconcile(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        before = (body.get("status") or {}).get("phase")
        result = reconcile_model(dict(body), logger)
        patch.status.update(result)
        if result["phase"] != before:
            kopf.info(body, reason=result["phase"], message=result["conditions"][-1]["message"])

    @kopf.on.resume(GROUP, VERSION, "modelapprovals", registry=registry)
    @kopf.on.create(GROUP, VERSION, "modelapprovals", registry=registry)
    def approved(spec: kopf.Spec, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        """A new approval may release a ModelDeployment that waits for it."""
        name, namespace = str(spec.get("modelDeployment") or ""), str(namespace or "")
        try:
            model = cast(dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        if (model.get("status") or {}).get("phase") != "AwaitingApproval":
            return
        result = reconcile_model(model, logger)
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {"status": result})
        if result["phase"] != "AwaitingApproval":
            logger.info("ModelDeployment %s/%s released by its approval", namespace, name)

    return registry
