"""The chain an admitted ModelDeployment became, as the cluster made it, for `make run` to show: the ModelDeployment,
its InferenceService (or Triton Deployment), the Deployment KServe made for it, the ReplicaSet and the Pods, each
with its state; followed by controller ownerReferences, uid by uid, as the webhook follows them (upwards there)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

from kubernetes import client as k8s

__all__ = ["model_chain", "wait_for_pods"]

GROUP, VERSION = "devmlops.io", "v1alpha1"


def _owned_by(items: list[dict[str, Any]], owner: Mapping[str, Any]) -> list[dict[str, Any]]:
    uid = (owner.get("metadata") or {}).get("uid")
    return [
        item
        for item in items
        if any(ref.get("uid") == uid and ref.get("controller") for ref in item["metadata"].get("ownerReferences") or [])
    ]


def _condition(obj: Mapping[str, Any], kind: str) -> str:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            reason = f" ({condition['reason']})" if condition.get("reason") else ""
            return f"{kind}={condition.get('status')}{reason}"
    return f"{kind}=?"


def _pod_state(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") or {}
    waiting = [
        f"{c['name']}: {c['state']['waiting'].get('reason')}"
        for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        if (c.get("state") or {}).get("waiting")
    ]
    unscheduled = [
        c.get("reason", "")
        for c in status.get("conditions") or []
        if c.get("type") == "PodScheduled" and c.get("status") == "False"
    ]
    initializers = [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
    more = waiting or [f"not scheduled: {r}" for r in unscheduled if r]
    node = (pod.get("spec") or {}).get("nodeName") or "no node"
    return f"{status.get('phase', '?')} on {node}; init {initializers}" + (f"; {', '.join(more)}" if more else "")


def _lists(client: k8s.ApiClient, namespace: str) -> tuple[list[dict[str, Any]], ...]:
    apps, core = k8s.AppsV1Api(client), k8s.CoreV1Api(client)

    def serialize(items: list[Any]) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], client.sanitize_for_serialization(items))

    return (
        serialize(apps.list_namespaced_deployment(namespace).items),
        serialize(apps.list_namespaced_replica_set(namespace).items),
        serialize(core.list_namespaced_pod(namespace).items),
    )


def model_chain(client: k8s.ApiClient, namespace: str, name: str) -> list[str]:
    """One line per object of the chain, indented by depth: ``Kind/name  state``."""
    custom = k8s.CustomObjectsApi(client)
    model = cast(
        dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", name)
    )
    lines = [f"ModelDeployment/{name}  phase {(model.get('status') or {}).get('phase', '?')}"]
    deployments, replica_sets, pods = _lists(client, namespace)
    child = (model.get("status") or {}).get("child") or {}
    top: list[dict[str, Any]] = []
    if child.get("kind") == "InferenceService":
        isvc = cast(
            dict[str, Any],
            custom.get_namespaced_custom_object("serving.kserve.io", "v1beta1", namespace, "inferenceservices", name),
        )
        lines.append(f"  InferenceService/{name}  {_condition(isvc, 'Ready')}")
        top, depth = _owned_by(deployments, isvc), 2
    else:
        top, depth = _owned_by(deployments, model), 1
    for deployment in top:
        ready = (deployment.get("status") or {}).get("availableReplicas") or 0
        wanted = (deployment.get("spec") or {}).get("replicas")
        lines.append(f"{'  ' * depth}Deployment/{deployment['metadata']['name']}  {ready}/{wanted} available")
        for replica_set in _owned_by(replica_sets, deployment):
            lines.append(f"{'  ' * (depth + 1)}ReplicaSet/{replica_set['metadata']['name']}")
            for pod in _owned_by(pods, replica_set):
                lines.append(f"{'  ' * (depth + 2)}Pod/{pod['metadata']['name']}  {_pod_state(pod)}")
    return lines


def wait_for_pods(client: k8s.ApiClient, namespace: str, name: str, *, timeout: float) -> list[str]:
    """The chain once it reaches a Pod (KServe and the controllers take a few seconds), or as far as it got."""
    deadline = time.monotonic() + timeout
    lines = model_chain(client, namespace, name)
    while not any(line.strip().startswith("Pod/") for line in lines) and time.monotonic() < deadline:
        time.sleep(0.5)
        lines = model_chain(client, namespace, name)
    return lines
