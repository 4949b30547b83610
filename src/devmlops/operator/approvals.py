"""Does this ModelDeployment wait for a second person? The same compiled policies and approval lookup as the
webhook, read from the API server when the operator reconciles (not in the admission path)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client as k8s

from devmlops.adapters.approvals import find_approval
from devmlops.core.decision import select_policies
from devmlops.core.evidence import ApprovalState
from devmlops.core.gates.approval import approval_required
from devmlops.core.policy import Policy, PolicySet, compile_model_policy, compile_policy
from devmlops.errors import InvalidInputError

__all__ = ["ApprovalCheck", "check_approval_state"]

GROUP, VERSION = "devmlops.io", "v1alpha1"


@dataclass(frozen=True, slots=True)
class ApprovalCheck:
    required_by: tuple[str, ...]
    state: ApprovalState

    @property
    def waiting(self) -> bool:
        return bool(self.required_by) and not self.state.approved


def _compiled(items: list[Mapping[str, Any]], *, team: bool) -> list[Policy]:
    policies = []
    for item in items:
        try:
            policies.append(compile_model_policy(item) if team else compile_policy(item))
        except InvalidInputError:
            continue  # the webhook refuses broken policies; one that slipped in is reported there
    return policies


def check_approval_state(api_client: k8s.ApiClient, model: Mapping[str, Any]) -> ApprovalCheck:
    custom, core = k8s.CustomObjectsApi(api_client), k8s.CoreV1Api(api_client)
    namespace = str(model["metadata"]["namespace"])
    cluster = cast(dict[str, Any], custom.list_cluster_custom_object(GROUP, VERSION, "clustermodelpolicies"))
    team = cast(dict[str, Any], custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "modelpolicies"))
    policies = PolicySet(tuple(_compiled(cluster["items"], team=False) + _compiled(team["items"], team=True)))
    namespace_object: Any = core.read_namespace(namespace)
    labels = namespace_object.metadata.labels or {}
    name = str(((model.get("spec") or {}).get("model") or {}).get("name") or "")
    selecting = select_policies(policies, namespace=namespace, namespace_labels=labels, model_name=name)
    required_by = tuple(p.name for p in selecting if approval_required(model, p))
    if not required_by:
        return ApprovalCheck((), ApprovalState(approved=False))
    approvals = cast(dict[str, Any], custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "modelapprovals"))
    return ApprovalCheck(required_by, find_approval(approvals["items"], model, dt.datetime.now(dt.UTC)))
