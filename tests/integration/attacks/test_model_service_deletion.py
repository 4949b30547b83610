"""Property 1b: a model's ClusterIP stays its own.

Deletions were never reviewed, a model's Service's included, and a ClusterIP is anyone's to ask for once it is free
(``spec.clusterIP``). Mallory, a namespace editor, deleted the Triton Service ``fraud`` and at once created a Service
of her own with its ClusterIP (10.0.0.207 in the run that found it); the operator wrote ``fraud`` again under a new
address (10.0.0.170). Every client that still dials the old address (the ``FRAUD_SERVICE_HOST`` variable of each Pod
started in the namespace before, a cached DNS answer, a configured address) reached her Service, whose endpoints are
hers to write (an EndpointSlice under her own Service's name). On main before the fix the deletion was admitted (this
test failed at it). Only the operator, KServe and the garbage collector (the ModelDeployment's own deletion) delete
a Service a model owns."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.integration.attacks.conftest import Served, denied
from tests.integration.attacks.test_review_findings import _service
from tests.integration.support import GROUP, VERSION, eventually


def test_mallory_cannot_delete_a_models_service_to_free_its_cluster_ip(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, served_triton: Served
) -> None:
    namespace = served_triton.namespace
    cluster_ip = eventually(lambda: _service(admin, namespace, "fraud"), timeout=30, what="the operator's Service")[
        "spec"
    ]["clusterIP"]
    core = k8s.CoreV1Api(mallory)
    message = denied(core.delete_namespaced_service, "fraud", namespace)
    for named in (f"Service {namespace}/fraud", f"ModelDeployment {namespace}/fraud", cluster_ip, "'mallory'"):
        assert named in message
    # A collection's deletion is decided Service by Service (mallory's role has no deletecollection; the built-in
    # edit role has): the model's is refused in it too, a cluster admin's included (delete the ModelDeployment).
    everything = k8s.CoreV1Api(admin).delete_collection_namespaced_service
    assert f"Service {namespace}/fraud" in denied(everything, namespace)
    # The address is still the model's: her Service asking for it is refused by the API server (allocated).
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "lookalike"},
        "spec": {"clusterIP": cluster_ip, "ports": [{"name": "http", "port": 8000}]},
    }
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_service(namespace, body)
    assert refused.value.status == 422, f"Service lookalike asked for {cluster_ip}: {refused.value.body}"
    assert (_service(admin, namespace, "fraud") or {})["spec"]["clusterIP"] == cluster_ip
    # The ModelDeployment's own deletion still takes its Service with it (the garbage collector's delete).
    k8s.CustomObjectsApi(admin).delete_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", "fraud")
    eventually(lambda: _service(admin, namespace, "fraud") is None, timeout=60, what="the Service garbage-collected")
