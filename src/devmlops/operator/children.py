"""Write the children of a ModelDeployment: exactly what the renderer returns, replaced whole when they differ.

The operator compares the stored child with the rendering (``core/compare.py``, the comparison the webhook admits
children by). Equal, nothing is written (the API server's and KServe's defaults never cause an update loop).
Different, the child is replaced whole with a PUT, never merged: a merge-patch would keep whatever someone added.
Controllers' finalizers are kept, as they are bookkeeping, not what runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from devmlops.core.compare import differences, metadata_differences
from devmlops.core.render import ANNOTATION_POLICY_REVISION

__all__ = ["Written", "dynamic_client", "upsert"]


@dataclass(frozen=True, slots=True)
class Written:
    action: str  # created, unchanged or replaced
    drift: tuple[str, ...] = ()  # what differed from the rendering before a replacement
    stored: dict[str, Any] | None = None  # the child as the API server answered (its status among it)


def drift_of(wanted: dict[str, Any], current: dict[str, Any]) -> list[str]:
    problems = differences(wanted.get("spec") or {}, current.get("spec") or {}, "spec")
    problems += metadata_differences(
        wanted["metadata"],
        current.get("metadata") or {},
        ignored=(ANNOTATION_POLICY_REVISION, "devmlops.io/spec-hash"),
        extra_ok=("serving.kserve.io/", "internal.serving.kserve.io/", "deployment.kubernetes.io/"),
    )
    refs = (current.get("metadata") or {}).get("ownerReferences") or []
    if [r.get("uid") for r in refs if r.get("controller")] != [r["uid"] for r in wanted["metadata"]["ownerReferences"]]:
        problems.append("metadata.ownerReferences: not controlled by this ModelDeployment")
    return problems


def upsert(dynamic: DynamicClient, obj: dict[str, Any]) -> Written:
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    try:
        created: dict[str, Any] = resource.create(body=obj, namespace=namespace).to_dict()
        return Written("created", stored=created)
    except ApiException as exc:
        if exc.status != 409:
            raise
    current: dict[str, Any] = resource.get(name=name, namespace=namespace).to_dict()
    drift = drift_of(obj, current)
    if not drift:
        return Written("unchanged", stored=current)
    metadata = current.get("metadata") or {}
    body = {
        **obj,
        "metadata": {
            **obj["metadata"],
            "resourceVersion": metadata.get("resourceVersion"),
            "finalizers": metadata.get("finalizers") or [],
        },
    }
    if obj["kind"] == "Service":  # allocated addresses are immutable
        body["spec"] = {
            **obj["spec"],
            **{k: v for k, v in (current.get("spec") or {}).items() if k.startswith("clusterIP")},
        }
    replaced: dict[str, Any] = resource.replace(body=body, name=name, namespace=namespace).to_dict()
    return Written("replaced", tuple(drift), replaced)


def dynamic_client(api_client: k8s.ApiClient) -> DynamicClient:
    return DynamicClient(api_client)
