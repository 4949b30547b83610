"""Thin helpers over the ``kubernetes`` client: a client from a kubeconfig, CRD installation, generic create."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from devmlops.errors import DevmlopsError

__all__ = ["api_client", "apply_crds", "create_object", "denial_message"]


@contextmanager
def api_client(kubeconfig: Path) -> Iterator[k8s.ApiClient]:
    client = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield client
    finally:
        client.close()


def apply_crds(client: k8s.ApiClient, documents: Sequence[dict[str, Any]], *, timeout: float) -> list[str]:
    """Create or replace each CRD, then wait until all are Established and their resources are served."""
    api = k8s.ApiextensionsV1Api(client)
    names: list[str] = []
    for doc in documents:
        if doc.get("kind") != "CustomResourceDefinition":
            raise DevmlopsError(f"expected only CustomResourceDefinitions, got kind {doc.get('kind')!r}")
        name = doc["metadata"]["name"]
        body: Any = doc  # the client serializes plain dicts as they are
        try:
            api.create_custom_resource_definition(body)
        except ApiException as exc:
            if exc.status != 409:
                raise DevmlopsError(f"CRD {name} rejected by the API server: {denial_message(exc)}") from exc
            current: Any = api.read_custom_resource_definition(name)
            version = current.metadata.resource_version
            body = {**doc, "metadata": {**doc["metadata"], "resourceVersion": version}}
            api.replace_custom_resource_definition(name, body)
        names.append(name)
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            crd: Any = api.read_custom_resource_definition(name)
            conditions = {c.type: c.status for c in (crd.status.conditions or [])}
            if conditions.get("Established") == "True":
                pending.discard(name)
        if pending:
            time.sleep(0.1)
    if pending:
        raise DevmlopsError(f"CRDs not Established within {timeout:.0f}s: {', '.join(sorted(pending))}")
    return names


def create_object(dynamic: DynamicClient, doc: dict[str, Any], *, namespace: str | None = None) -> Any:
    """Create any object described by ``doc`` (its apiVersion and kind found through discovery)."""
    resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    ns = doc.get("metadata", {}).get("namespace") or namespace
    if resource.namespaced:
        return resource.create(body=doc, namespace=ns or "default")
    return resource.create(body=doc)


def denial_message(exc: ApiException) -> str:
    """The message the API server returned (for a webhook denial: the webhook's own text)."""
    import json

    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return str(exc.reason)
    return str(body.get("message") or exc.reason)
