"""kopf handlers in an explicit registry: ModelDeployment -> model server child + status conditions."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any, cast

import kopf
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.servingverify import VerificationPlan
from devmlops.operator.children import dynamic_client, upsert
from devmlops.operator.conditions import ConditionStatus, set_condition
from devmlops.operator.context import load_context
from devmlops.operator.kserve import build_inference_service
from devmlops.operator.triton import build_triton

__all__ = ["build_registry"]

GROUP, VERSION, PLURAL = "devmlops.io", "v1alpha1", "modeldeployments"
VERIFIER_IMAGE = os.environ.get("DEVMLOPS_VERIFIER_IMAGE", "devmlops:0.1.0")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_children(model: Mapping[str, Any], plan_json: str, revision: str) -> list[dict[str, Any]]:
    """The model server objects for the runtime kind; the first one is the child named in status."""
    if model["spec"]["runtime"]["kind"] == "triton":
        deployment, service = build_triton(
            model, plan_json=plan_json, verifier_image=VERIFIER_IMAGE, policy_revision=revision
        )
        return [deployment, service]
    return [build_inference_service(model, plan_json=plan_json, policy_revision=revision)]


def build_registry(api_client: k8s.ApiClient) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    custom = k8s.CustomObjectsApi(api_client)
    dynamic = dynamic_client(api_client)

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
        context = load_context(api_client, body)
        if context.awaiting_approval:
            digest = body["spec"]["model"]["digest"]
            message = (
                f"risk tier requires a ModelApproval for {digest} by a second person "
                f"({', '.join(context.approval_required_by)}); not served until then"
            )
            conditions = condition(conditions, "AwaitingApproval", "True", "NoValidApproval", message)
            conditions = condition(conditions, "ServingReady", "False", "AwaitingApproval", "no child until approved")
            return {"conditions": conditions, "observedGeneration": generation, "phase": "AwaitingApproval"}
        if context.approval_required_by:
            approved_by = f"approved by {context.approval.approver} ({context.approval.name})"
            conditions = condition(conditions, "AwaitingApproval", "False", "Approved", approved_by)
        plan = VerificationPlan.for_policies(context.bundle, body["spec"]["model"]["digest"], context.policies)
        children = build_children(body, plan.to_json(), context.revision)
        owner = kopf.Body(cast(kopf.RawBody, dict(body)))
        for item in children:
            kopf.adopt(item, owner=owner)
            action = upsert(dynamic, item)
            logger.info("%s %s %s", item["kind"], item["metadata"]["name"], action)
        child = children[0]
        conditions = condition(
            conditions, "ServingReady", "Unknown", "WaitingForChild", f"waiting for the {child['kind']} to report Ready"
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
