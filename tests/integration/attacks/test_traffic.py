"""Property 1b: traffic to a model's own address goes only to what was admitted.

kube-proxy sends a Service's traffic to the endpoints of every EndpointSlice labelled
``kubernetes.io/service-name: <Service>``, whoever wrote it and whatever its ``endpointslice.kubernetes.io/managed-by``
says; and it sends traffic to any ``spec.externalIPs`` address of any Service, in any namespace, to that Service's
endpoints (CVE-2020-8554). Mallory, a namespace editor, used both to take a model's address: an EndpointSlice of hers
under the Triton Service ``fraud`` (created, added to the controller's own slice, or relabelled onto it), and a
Service of hers whose externalIPs is the model Service's ClusterIP. Each test here failed before the fix (the slice
or the Service was created)."""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s

from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import (
    ALLOWED_IMAGES,
    TRITON,
    Served,
    admitted,
    as_dict,
    denied,
    policy_name,
    serve,
)
from tests.integration.attacks.test_review_findings import _service
from tests.integration.support import SignedModel, eventually, trusting

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MALLORYS_HOST = "10.0.0.250"  # an address of hers (any address: kube-proxy does not check whose it is)


def _slice(name: str, service: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {SERVICE_NAME_LABEL: service, "endpointslice.kubernetes.io/managed-by": "mallory"},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [MALLORYS_HOST], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
    }


def _controllers_slice(admin: k8s.ApiClient, namespace: str, service: str) -> dict[str, Any]:
    """The EndpointSlice the endpointslice controller keeps for ``service`` (it writes one even without Pods)."""

    def found() -> dict[str, Any] | None:
        items = k8s.DiscoveryV1Api(admin).list_namespaced_endpoint_slice(
            namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}"
        )
        return next((as_dict(s) for s in items.items), None)

    return eventually(found, timeout=30, what=f"the endpointslice controller's slice for Service {service}")


def test_an_endpoint_slice_of_mallorys_cannot_join_a_triton_models_service(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, served_triton: Served
) -> None:
    """Mallory creates an EndpointSlice labelled with the model's Service name (and with a managed-by of her own):
    kube-proxy would add her address to the Service ``fraud``'s backends. Refused, naming the model; one under a
    name no model carries is hers to write."""
    namespace = served_triton.namespace
    discovery = k8s.DiscoveryV1Api(mallory)
    for service in ("fraud", "fraud-canary", "fraud-predictor"):
        message = denied(discovery.create_namespaced_endpoint_slice, namespace, _slice(f"steal-{service}", service))
        assert f"EndpointSlice {namespace}/steal-{service}" in message
        assert f"ModelDeployment {namespace}/fraud" in message
        assert "mallory" in message
    admitted(discovery.create_namespaced_endpoint_slice, namespace, _slice("own", "mallorys-own-service"))


def test_mallory_cannot_add_her_endpoint_to_the_controllers_slice_nor_relabel_hers_onto_the_model(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, served_triton: Served
) -> None:
    """The endpointslice controller's own slice of the model's Service takes no endpoint of hers, and a slice of hers
    (admitted under another Service) cannot be relabelled onto the model's Service name."""
    namespace = served_triton.namespace
    discovery = k8s.DiscoveryV1Api(mallory)
    theirs = _controllers_slice(admin, namespace, "fraud")
    patch = {"endpoints": [*(theirs.get("endpoints") or []), {"addresses": [MALLORYS_HOST]}]}
    message = denied(discovery.patch_namespaced_endpoint_slice, theirs["metadata"]["name"], namespace, patch)
    assert f"ModelDeployment {namespace}/fraud" in message
    admitted(discovery.create_namespaced_endpoint_slice, namespace, _slice("decoy", "decoy"))
    relabel = {"metadata": {"labels": {SERVICE_NAME_LABEL: "fraud"}}}
    assert f"ModelDeployment {namespace}/fraud" in denied(
        discovery.patch_namespaced_endpoint_slice, "decoy", namespace, relabel
    )


def test_outside_enforcement_an_endpoint_slice_cannot_join_a_models_service_either(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, stack: DevmlopsStack, plain_namespace: str, attack_model: SignedModel
) -> None:
    """A model's children are devmlops's guarantee in every namespace: its address too."""
    namespace = plain_namespace
    allow = {"images": list(ALLOWED_IMAGES)}
    with trusting(admin, stack, namespace, attack_model, policy=policy_name(namespace), allow=allow) as policy:
        serve(admin, namespace, attack_model, policy, runtime={"kind": "triton", "image": TRITON})
        eventually(lambda: _service(admin, namespace, "fraud"), timeout=30, what="the operator's Service")
        discovery = k8s.DiscoveryV1Api(mallory)
        message = denied(discovery.create_namespaced_endpoint_slice, namespace, _slice("steal", "fraud"))
        assert f"ModelDeployment {namespace}/fraud" in message


def test_a_service_in_another_namespace_cannot_take_a_models_cluster_ip_as_an_external_ip(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, served_triton: Served, plain_namespace: str
) -> None:
    """CVE-2020-8554: kube-proxy sends traffic for any Service's spec.externalIPs to that Service's endpoints, on
    every node; a Service of mallory's, in a namespace without the enforce label, naming the model's ClusterIP
    intercepts the model's in-cluster clients. Refused, naming the model whose address it is."""
    model_service = eventually(
        lambda: _service(admin, served_triton.namespace, "fraud"), timeout=30, what="the operator's Service"
    )
    cluster_ip = model_service["spec"]["clusterIP"]
    core = k8s.CoreV1Api(mallory)
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "interceptor"},
        "spec": {"selector": {"app": "mallory"}, "ports": [{"port": 8000}], "externalIPs": [cluster_ip]},
    }
    message = denied(core.create_namespaced_service, plain_namespace, body)
    assert cluster_ip in message
    assert f"ModelDeployment {served_triton.namespace}/fraud" in message
    body["spec"]["externalIPs"] = ["192.0.2.10"]  # any address: a node's, a Pod's, another cluster's
    assert "externalIPs" in denied(core.create_namespaced_service, plain_namespace, body)
    del body["spec"]["externalIPs"]
    admitted(core.create_namespaced_service, plain_namespace, body)
