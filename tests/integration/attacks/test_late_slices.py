"""Property 1b, after admission: an EndpointSlice under a model's Service name that the admission checks never saw.

The webhook keeps every EndpointSlice naming a model's Service for the EndpointSlice controller, and refuses a new
ModelDeployment whose Service names already carry a slice; both read, neither locks. Mallory, who creates the
ModelDeployment herself, controls the timing: a slice of hers written in the instant between its admission and its
storage is seen by neither check, and kube-proxy joins it to the model's Service (her address among its backends).
That race cannot be hit on purpose, so the test writes what it leaves behind: once the model is served and its
Service exists, a slice under the Service's name with her address and no owner, written as the EndpointSlice
controller (whose writes the webhook lets through, as it must). The operator finds it on its next look at the model
(a slice that does not name the Service as its controller makes it look), deletes it, and says so in a Warning Event
on the ModelDeployment; the controller's own slice for the Service stays. Before the fix the slice stayed (the test
failed waiting for its removal)."""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.adapters.kube import api_client
from devmlops.harness.controlplane import ControlPlane
from tests.integration.attacks.conftest import KServePods, Served, admitted
from tests.integration.attacks.test_traffic import MALLORYS_HOST, _controllers_slice, _slice
from tests.integration.support import eventually

# The EndpointSlice controller's identity, which the webhook's matchCondition lets through (webhook.endpointSliceUsers).
ENDPOINT_SLICE_CONTROLLER = "system:serviceaccount:kube-system:endpointslice-controller"
REMOVED = "ForeignEndpointSliceRemoved"


def _exists(discovery: k8s.DiscoveryV1Api, namespace: str, name: str) -> bool:
    try:
        discovery.read_namespaced_endpoint_slice(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _raced_slice_is_removed(admin: k8s.ApiClient, control_plane: ControlPlane, namespace: str, service: str) -> None:
    """Write the slice the race leaves under ``service`` (as the EndpointSlice controller), then wait for the operator:
    the slice removed, a Warning Event on ModelDeployment fraud naming it, the controller's own slice kept."""
    discovery = k8s.DiscoveryV1Api(admin)
    theirs = _controllers_slice(admin, namespace, service)  # the Service exists: the controller keeps its slice
    with api_client(control_plane.kubeconfig("admin")) as client:
        client.set_default_header("Impersonate-User", ENDPOINT_SLICE_CONTROLLER)
        admitted(k8s.DiscoveryV1Api(client).create_namespaced_endpoint_slice, namespace, _slice("raced", service))
    eventually(lambda: not _exists(discovery, namespace, "raced"), timeout=15, what="the foreign slice's removal")

    def event() -> Any:
        events = k8s.CoreV1Api(admin).list_namespaced_event(namespace, field_selector=f"reason={REMOVED}").items
        return next((e for e in events if e.involved_object.name == "fraud" and "raced" in (e.message or "")), None)

    found = eventually(event, timeout=15, what=f"a {REMOVED} Event on ModelDeployment fraud")
    assert found.type == "Warning"
    assert found.involved_object.kind == "ModelDeployment"
    assert f"EndpointSlice {namespace}/raced labelled kubernetes.io/service-name={service}" in found.message
    assert MALLORYS_HOST in found.message
    kept = discovery.read_namespaced_endpoint_slice(theirs["metadata"]["name"], namespace)
    assert kept.metadata.uid == theirs["metadata"]["uid"]  # the controller's own slice was left alone


def test_a_slice_the_admission_checks_did_not_see_is_removed_from_a_triton_models_service(
    admin: k8s.ApiClient, control_plane: ControlPlane, served_triton: Served
) -> None:
    _raced_slice_is_removed(admin, control_plane, served_triton.namespace, "fraud")


def test_a_slice_the_admission_checks_did_not_see_is_removed_from_kserves_predictor_service(
    admin: k8s.ApiClient, control_plane: ControlPlane, kserve_pods: KServePods
) -> None:
    """(KServe writes its predictor Service only for a runtime it finds: ``kserve_pods`` brings a cluster runtime.)"""
    _raced_slice_is_removed(admin, control_plane, kserve_pods.served.namespace, "fraud-predictor")
