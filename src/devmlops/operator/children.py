"""Create or update the children of a ModelDeployment, idempotently and conflict-safe.

A hash of the wanted object is stored in ``devmlops.io/spec-hash``: when it matches, nothing is written (the API
server's defaults never cause an update loop); when it differs, the object is patched to the wanted state.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

__all__ = ["SPEC_HASH", "upsert"]

SPEC_HASH = "devmlops.io/spec-hash"


def _hash(obj: dict[str, Any]) -> str:
    wanted = {key: obj.get(key) for key in ("spec", "data")} | {"labels": obj["metadata"].get("labels")}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:20]


def upsert(dynamic: DynamicClient, obj: dict[str, Any]) -> str:
    """Return created, updated or unchanged."""
    obj["metadata"].setdefault("annotations", {})[SPEC_HASH] = _hash(obj)
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    try:
        resource.create(body=obj, namespace=namespace)
        return "created"
    except ApiException as exc:
        if exc.status != 409:
            raise
    current = resource.get(name=name, namespace=namespace)
    if (current.metadata.annotations or {}).get(SPEC_HASH) == obj["metadata"]["annotations"][SPEC_HASH]:
        return "unchanged"
    resource.patch(body=obj, name=name, namespace=namespace, content_type="application/merge-patch+json")
    return "updated"


def dynamic_client(api_client: k8s.ApiClient) -> DynamicClient:
    return DynamicClient(api_client)
