"""A model's address, pure (core/addresses.py): EndpointSlices under a model's Service name are the EndpointSlice
controller's alone; no Service adds an externalIP. Decided through ``decide()``, as the webhook decides them."""

from __future__ import annotations

from typing import Any

from devmlops.core.addresses import (
    ForeignService,
    ForeignSlice,
    added_external_ips,
    foreign_services,
    foreign_slices,
    names_its_service,
    sliced_services,
    waiting_slice_result,
    waiting_slices,
)
from devmlops.core.decision import decide
from devmlops.core.evidence import Evidence, Identities
from devmlops.core.model import Decision
from devmlops.core.policy import PolicySet
from devmlops.core.review import AdmissionRequest, GroupVersionKind
from tests.unit.core.fakes import FakeVerifier

IDS = Identities()
CONTROLLER = "system:serviceaccount:kube-system:endpointslice-controller"
MODEL = "ModelDeployment ml/fraud"


def endpoint_slice(service: str | None, *addresses: str) -> dict[str, Any]:
    labels = {"kubernetes.io/service-name": service} if service is not None else {}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "s", "labels": labels},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a]} for a in addresses],
    }


def service(*external_ips: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"app": "x"}, "ports": [{"port": 80}]}
    if external_ips:
        spec["externalIPs"] = list(external_ips)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "interceptor"}, "spec": spec}


def request(
    obj: dict[str, Any], *, user: str = "mallory", old: dict[str, Any] | None = None, group: str = ""
) -> AdmissionRequest:
    kind = str(obj["kind"])
    return AdmissionRequest(
        uid="u",
        kind=GroupVersionKind(group, "v1", kind),
        operation="UPDATE" if old is not None else "CREATE",
        namespace="ml",
        name=str(obj["metadata"]["name"]),
        username=user,
        groups=(),
        object=obj,
        old_object=old,
        resource="endpointslices" if kind == "EndpointSlice" else "services",
    )


def slice_decision(obj: dict[str, Any], *, models: dict[str, str], **more: Any) -> Decision:
    evidence = Evidence(model_addresses=models, identities=IDS)
    return decide(request(obj, group="discovery.k8s.io", **more), PolicySet(), evidence, FakeVerifier())


def test_a_slice_of_anyone_but_the_controller_under_a_models_service_is_refused_naming_all_four() -> None:
    denied = slice_decision(endpoint_slice("fraud", "10.0.0.250"), models={"fraud": MODEL})
    assert not denied.allowed
    for named in ("EndpointSlice ml/s", "kubernetes.io/service-name=fraud", MODEL, "'mallory'", CONTROLLER):
        assert named in denied.message
    assert "label the slice with a Service of your own" in denied.results[0].hint


def test_the_endpointslice_controller_writes_a_models_slices_and_anyone_writes_other_slices() -> None:
    assert slice_decision(endpoint_slice("fraud", "10.1.0.7"), models={"fraud": MODEL}, user=CONTROLLER).allowed
    manager = "system:kube-controller-manager"  # without --use-service-account-credentials
    assert slice_decision(endpoint_slice("fraud"), models={"fraud": MODEL}, user=manager).allowed
    assert slice_decision(endpoint_slice("mine", "10.0.0.250"), models={"fraud": MODEL}).allowed
    assert slice_decision(endpoint_slice(None, "10.0.0.250"), models={"fraud": MODEL}).allowed


def test_relabelling_a_slice_onto_or_off_a_models_service_is_refused() -> None:
    mine, theirs = endpoint_slice("decoy", "10.0.0.250"), endpoint_slice("fraud", "10.1.0.7")
    models = {"fraud": MODEL}
    assert not slice_decision(endpoint_slice("fraud", "10.0.0.250"), models=models, old=mine).allowed
    assert not slice_decision(endpoint_slice("decoy", "10.1.0.7"), models=models, old=theirs).allowed
    added = endpoint_slice("fraud", "10.1.0.7", "10.0.0.250")
    assert "ModelDeployment ml/fraud" in slice_decision(added, models=models, old=theirs).message


def test_the_services_a_slice_joins_are_its_label_and_the_one_it_had() -> None:
    old = endpoint_slice("fraud")
    assert sliced_services(request(endpoint_slice("decoy"), old=old)) == ("decoy", "fraud")
    assert sliced_services(request(endpoint_slice("fraud"), old=old)) == ("fraud",)
    assert sliced_services(request(endpoint_slice(None))) == ()


def service_decision(obj: dict[str, Any], models: dict[str, str] | None = None, **more: Any) -> Decision:
    evidence = Evidence(model_addresses=models or {}, identities=IDS)
    return decide(request(obj, **more), PolicySet(), evidence, FakeVerifier())


def test_a_service_adding_a_models_cluster_ip_as_an_external_ip_is_refused_naming_the_model() -> None:
    owner = "Service team/fraud of ModelDeployment team/fraud"
    denied = service_decision(service("10.0.0.17"), {"10.0.0.17": owner})
    assert not denied.allowed
    for named in ("Service ml/interceptor", "spec.externalIPs adds 10.0.0.17", owner, "'mallory'", "CVE-2020-8554"):
        assert named in denied.message


def test_any_new_external_ip_is_refused_from_anyone_and_those_a_service_had_may_stay_or_go() -> None:
    assert "spec.externalIPs adds 192.0.2.10" in service_decision(service("192.0.2.10"), user=IDS.operator).message
    old = service("192.0.2.10")
    assert service_decision(service("192.0.2.10"), old=old).allowed
    assert service_decision(service(), old=old).allowed
    assert not service_decision(service("192.0.2.10", "192.0.2.11"), old=old).allowed
    assert service_decision(service()).allowed
    assert added_external_ips(request(service("192.0.2.11", "192.0.2.10"), old=old)) == ("192.0.2.11",)


def owned_slice(name: str, service: str, uid: str, *, controller: bool = True) -> dict[str, Any]:
    obj = endpoint_slice(service, "10.0.0.250")
    ref = {"apiVersion": "v1", "kind": "Service", "name": service, "uid": uid, "controller": controller}
    obj["metadata"] = {**obj["metadata"], "name": name, "ownerReferences": [ref]}
    return obj


def test_a_new_model_finds_no_slice_waiting_under_its_service_name_but_the_controllers_for_a_models_service() -> None:
    """Only a slice whose controlling owner is the stored Service a model owns (by uid) may be there already."""
    hers = endpoint_slice("fraud", "10.0.0.250")  # managed-by the controller, she says: a label anyone writes
    labels = {**hers["metadata"]["labels"], "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    hers["metadata"] = {"name": "early", "labels": labels}
    kept = owned_slice("fraud-abc", "fraud", "uid-1")
    forged = owned_slice("forged", "fraud", "uid-2")
    owner_only = owned_slice("owner-only", "fraud", "uid-1", controller=False)
    slices = [hers, kept, forged, owner_only, owned_slice("other", "decoy", "uid-1")]
    assert waiting_slices(slices, "fraud", "uid-1") == ("early", "forged", "owner-only")
    assert waiting_slices(slices, "fraud", "") == ("early", "fraud-abc", "forged", "owner-only")  # no model owns it
    assert waiting_slices([], "fraud", "") == ()


def test_every_slice_under_a_models_service_names_but_those_its_service_controls_by_uid_is_foreign() -> None:
    """After the model's create nothing but the operator looks again: a slice that the webhook's checks did not see
    (written between the model's admission and its storage) has no controlling owner that is the Service, by uid."""
    kept = owned_slice("fraud-abc", "fraud", "uid-1")
    wrong_uid = owned_slice("forged", "fraud", "uid-2")
    not_controller = owned_slice("owner-only", "fraud", "uid-1", controller=False)
    no_owner = endpoint_slice("fraud", "10.0.0.250", "10.0.0.251")
    no_owner["metadata"] = {**no_owner["metadata"], "name": "raced"}
    other_service = owned_slice("other", "decoy", "uid-9")
    no_owner_elsewhere = {**endpoint_slice("mine", "10.0.0.7"), "metadata": {"name": "mine", "labels": {}}}
    canary = {**endpoint_slice("fraud-canary"), "metadata": {"name": "early-canary", "labels": {
        "kubernetes.io/service-name": "fraud-canary"}}}  # fmt: skip
    slices = [kept, wrong_uid, not_controller, no_owner, other_service, no_owner_elsewhere, canary]
    found = foreign_slices(slices, ("fraud", "fraud-canary"), {"fraud": "uid-1"})
    assert found == (
        ForeignSlice("forged", "fraud", ("10.0.0.250",)),
        ForeignSlice("owner-only", "fraud", ("10.0.0.250",)),
        ForeignSlice("raced", "fraud", ("10.0.0.250", "10.0.0.251")),
        ForeignSlice("early-canary", "fraud-canary", ()),  # no Service fraud-canary: the controller wrote none
    )
    assert foreign_slices([kept], ("fraud",), {"fraud": "uid-1"}) == ()
    # No Service fraud (deleted: its controller's slice lingers until the garbage collector removes it): only slices
    # that do not name a Service fraud as their controller are foreign; by uid again once a Service fraud exists.
    assert foreign_slices([kept, wrong_uid, no_owner, not_controller], ("fraud",), {}) == (
        ForeignSlice("raced", "fraud", ("10.0.0.250", "10.0.0.251")),
        ForeignSlice("owner-only", "fraud", ("10.0.0.250",)),
    )
    assert foreign_slices([kept], ("fraud",), {"fraud": "uid-new"}) == (
        ForeignSlice("fraud-abc", "fraud", ("10.0.0.250",)),
    )
    assert foreign_slices(slices, (), {"fraud": "uid-1"}) == ()  # names the model does not have are not its own
    message = found[2].describe("ml")
    assert "EndpointSlice ml/raced labelled kubernetes.io/service-name=fraud" in message
    assert "10.0.0.250, 10.0.0.251" in message


def named_service(name: str, *owners: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "ownerReferences": list(owners)}, "spec": spec}


def isvc_ref(uid: str, name: str = "fraud", *, controller: bool = True) -> dict[str, Any]:
    return {"kind": "InferenceService", "name": name, "uid": uid, "controller": controller}


def test_every_service_under_a_kserve_models_names_but_those_its_inference_service_controls_by_uid_is_foreign() -> None:
    """A Service written between the model's admission and its storage was seen by neither check; KServe keeps it when
    its ports and selector match, so only the model's own InferenceService (by uid) may control one there."""
    names = ("fraud-predictor", "fraud-transformer", "fraud-explainer", "fraud-canary")
    kserves = named_service(
        "fraud-predictor", isvc_ref("isvc-1"), type="ClusterIP", selector={"app": "isvc.fraud-predictor"}
    )
    hers = named_service("fraud-transformer", type="ExternalName", externalName="model.mallory.example.com")
    forged = named_service("fraud-explainer", isvc_ref("isvc-2"))
    owner_only = named_service("fraud-canary", isvc_ref("isvc-1", controller=False))
    elsewhere = named_service("decoy", type="ExternalName", externalName="x.example.com")
    services = [kserves, hers, forged, owner_only, elsewhere]
    found = foreign_services(services, names, inference_service="fraud", uid="isvc-1")
    assert found == (
        ForeignService("fraud-transformer", "type ExternalName -> model.mallory.example.com", ""),
        ForeignService("fraud-explainer", "type ClusterIP, selector none", "InferenceService fraud (uid isvc-2)"),
        ForeignService("fraud-canary", "type ClusterIP, selector none", ""),
    )
    # No InferenceService of the model's yet (the race's moment): every Service there is foreign but one that names
    # an InferenceService fraud as its controller (a deleted one's, which the garbage collector removes).
    assert foreign_services(services, names, inference_service="fraud", uid="") == (found[0], found[2])
    assert foreign_services([kserves], names, inference_service="fraud", uid="isvc-new") == (
        ForeignService(
            "fraud-predictor",
            "type ClusterIP, selector app=isvc.fraud-predictor",
            "InferenceService fraud (uid isvc-1)",
        ),
    )
    assert foreign_services(services, (), inference_service="fraud", uid="isvc-1") == ()
    message = found[0].describe("ml", "fraud")
    assert (
        "Service ml/fraud-transformer (type ExternalName -> model.mallory.example.com), with no controlling" in message
    )
    assert "is not the model's InferenceService fraud's (by uid)" in message
    assert "KServe keeps a Service it finds under its name" in message


def test_a_slice_naming_its_service_as_controller_by_name_waits_for_the_reconcile_any_other_is_looked_at_now() -> None:
    assert names_its_service(owned_slice("fraud-abc", "fraud", "uid-1"))
    assert names_its_service(owned_slice("forged", "fraud", "any"))  # the uid is the reconcile's to check
    assert not names_its_service(owned_slice("owner-only", "fraud", "uid-1", controller=False))
    assert not names_its_service(endpoint_slice("fraud", "10.0.0.250"))
    elsewhere = owned_slice("x", "decoy", "uid-1")
    elsewhere["metadata"]["labels"] = {"kubernetes.io/service-name": "fraud"}
    assert not names_its_service(elsewhere)  # controlled by Service decoy, labelled as joining fraud
    assert not names_its_service(endpoint_slice(None))


def test_a_waiting_slices_refusal_names_the_slice_its_label_and_what_kube_proxy_does() -> None:
    result = waiting_slice_result("ml", "early", "fraud-predictor")
    assert result.outcome == "fail"
    assert "EndpointSlice ml/early labelled kubernetes.io/service-name=fraud-predictor already exists" in result.reason
    assert "kube-proxy" in result.reason
    assert "delete EndpointSlice early" in result.hint


def service_deletion(owner_kind: str | None, user: str) -> Decision:
    old = service()
    old["metadata"] = {"name": "fraud", "namespace": "ml"}
    old["spec"]["clusterIP"] = "10.0.0.207"
    if owner_kind is not None:
        old["metadata"]["ownerReferences"] = [{"kind": owner_kind, "name": "fraud", "uid": "u", "controller": True}]
    req = AdmissionRequest(
        uid="u",
        kind=GroupVersionKind("", "v1", "Service"),
        operation="DELETE",
        namespace="ml",
        name="fraud",
        username=user,
        groups=(),
        object=None,
        old_object=old,
        resource="services",
    )
    return decide(req, PolicySet(), Evidence(identities=IDS), FakeVerifier())


def test_a_models_service_is_deleted_only_by_the_operator_kserve_or_the_garbage_collector() -> None:
    """Its ClusterIP, once free, is anyone's to ask for while the model's clients still dial it."""
    denied = service_deletion("ModelDeployment", "mallory")
    assert not denied.allowed
    for named in ("Service ml/fraud", "ModelDeployment ml/fraud", "ClusterIP 10.0.0.207", "'mallory'", IDS.operator):
        assert named in denied.message
    assert not service_deletion("InferenceService", "alice").allowed
    for user in (IDS.operator, IDS.kserve, *IDS.service_deleters):
        assert service_deletion("ModelDeployment", user).allowed
    assert service_deletion(None, "mallory").allowed  # no model's Service: anyone's to delete
    assert service_deletion("Deployment", "mallory").allowed
