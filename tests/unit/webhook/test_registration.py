"""What the API server sends the webhook about Services and EndpointSlices (webhook/registration.py)."""

from __future__ import annotations

from devmlops.core.evidence import Identities
from devmlops.core.workloads import ROUTING_LABEL_KEYS, SCRAPED_LABEL_KEYS, SERVICE_SUFFIXES, lookalike_pattern
from devmlops.webhook.registration import (
    MODEL_SERVICE_DELETED,
    MODEL_SERVICE_DELETION,
    MUTATING_ENTRIES,
    OWNED_BY_MODEL,
    ROUTING_CONDITION,
    VALIDATING_ENTRIES,
    service_slice_condition,
    webhook_entry,
)


def test_outside_enforcement_every_service_named_like_a_models_address_is_sent() -> None:
    """KServe keeps a Service it finds under its name: an unowned ExternalName Service named <md>-predictor in a
    namespace without the enforce label took the model's address, never sent to the webhook (owned ones only)."""
    (entry,) = [e for e in VALIDATING_ENTRIES if e.name == "services"]
    assert entry.where == "unenforced"
    (condition,) = webhook_entry(entry, "https://x/validate", b"", 5, "validate")["matchConditions"]
    expression = condition["expression"]
    assert OWNED_BY_MODEL in expression
    for suffix in (s for s in SERVICE_SUFFIXES if s):
        assert f"object.metadata.name.endsWith('{suffix}')" in expression


def test_everywhere_every_service_setting_external_ips_is_sent() -> None:
    """kube-proxy intercepts a Service's externalIPs in the cluster (CVE-2020-8554), whatever its namespace."""
    (entry,) = [e for e in VALIDATING_ENTRIES if e.name == "services"]
    (condition,) = webhook_entry(entry, "https://x/validate", b"", 5, "validate")["matchConditions"]
    assert "(has(object.spec.externalIPs) && size(object.spec.externalIPs) > 0)" in condition["expression"]
    assert [e.where for e in VALIDATING_ENTRIES if e.name == "services-enforced"] == ["enforced"]


def test_every_slice_joining_a_service_is_sent_unless_the_endpointslice_controller_writes_it() -> None:
    """A slice labelled kubernetes.io/service-name joins that Service in kube-proxy whoever wrote it; the
    controller's own writes (every Pod readiness change) skip the webhook."""
    (entry,) = [e for e in VALIDATING_ENTRIES if e.name == "endpointslices"]
    webhook = webhook_entry(entry, "https://x/validate", b"", 5, "validate")
    assert entry.where == "all"
    assert [(r["apiGroups"], r["resources"], r["operations"]) for r in webhook["rules"]] == [
        (["discovery.k8s.io"], ["endpointslices"], ["CREATE", "UPDATE"])
    ]
    (condition,) = webhook["matchConditions"]
    expression = condition["expression"]
    assert expression == service_slice_condition(Identities().endpoint_slices)
    names = ", ".join(f"'{w}'" for w in Identities().endpoint_slices)
    assert expression.startswith(f"!(request.userInfo.username in [{names}]) && (")
    for obj in ("object", "oldObject"):
        assert f"'kubernetes.io/service-name' in {obj}.metadata.labels" in expression


def test_everywhere_the_deletion_of_a_service_a_model_owns_is_sent_and_no_other_deletion() -> None:
    """A deleted model Service's ClusterIP was taken by mallory's Service at once (spec.clusterIP); a DELETE carries
    the stored Service as oldObject (object is null), so the condition reads oldObject only."""
    (entry,) = [e for e in VALIDATING_ENTRIES if e.name == "model-service-deletes"]
    webhook = webhook_entry(entry, "https://x/validate", b"", 5, "validate")
    assert entry.where == "all"
    assert [(r["apiGroups"], r["resources"], r["operations"]) for r in webhook["rules"]] == [
        ([""], ["services"], ["DELETE"])
    ]
    (condition,) = webhook["matchConditions"]
    assert condition["expression"] == MODEL_SERVICE_DELETION
    # The garbage collector's and the namespace controller's deletions never wait on the webhook (it may be down).
    for user in Identities().service_deleters:
        assert f"'{user}'" in MODEL_SERVICE_DELETION.split("]) && ")[0]
    assert MODEL_SERVICE_DELETION.endswith(f"]) && {MODEL_SERVICE_DELETED}")
    assert MODEL_SERVICE_DELETED.startswith("oldObject != null && has(oldObject.metadata.ownerReferences)")
    assert "object.metadata" not in MODEL_SERVICE_DELETED.replace("oldObject.metadata", "")
    assert "['ModelDeployment', 'InferenceService']" in MODEL_SERVICE_DELETED


def test_outside_enforcement_every_pod_and_workload_wearing_a_models_routing_labels_is_sent() -> None:
    """A model's Service selects its Pods by label: outside enforcement mallory's Pod of her own image, labelled as
    the model, was never sent to the webhook and took the model's traffic."""
    entries = {e.name: e for e in VALIDATING_ENTRIES if e.routing}
    assert sorted(entries) == ["routed-pods", "routed-workloads"]
    resources = {r for e in entries.values() for rule in e.rules for r in rule.resources}
    assert resources == {
        "pods",
        "pods/ephemeralcontainers",  # it may mount the Pod's volumes, the verified model's among them
        *("deployments", "replicasets", "statefulsets", "daemonsets", "jobs", "cronjobs"),
    }
    for entry in entries.values():
        assert entry.where == "unenforced"
        (condition,) = webhook_entry(entry, "https://x/validate", b"", 5, "validate")["matchConditions"]
        assert condition["expression"] == ROUTING_CONDITION
    for key in ROUTING_LABEL_KEYS:
        assert f"'{key}'" in ROUTING_CONDITION
    # And a key Prometheus reads as one the guards' PodMonitor keeps a Pod by (round 3 review).
    for key in SCRAPED_LABEL_KEYS:
        assert f"k.matches('{lookalike_pattern(key)}')" in ROUTING_CONDITION
    for where in ("object.metadata.labels", "spec.template.metadata.labels", "spec.jobTemplate.spec.template"):
        assert where in ROUTING_CONDITION
    assert "oldObject != null" in ROUTING_CONDITION  # an update that drops the label is sent too
    assert "startsWith('isvc.')" in ROUTING_CONDITION


def test_outside_enforcement_every_exec_attach_and_port_forward_is_sent() -> None:
    """A CONNECT carries its options (PodExecOptions, ...), not the Pod, so no matchCondition can tell a model's Pod:
    outside enforcement mallory's exec into a model's own Pod was never sent. Every one is sent now, from every
    namespace but the excluded ones; the webhook reads the Pod (core/workloads.py: _enforced)."""
    connects = {e.name: e for e in VALIDATING_ENTRIES if any("CONNECT" in r.operations for r in e.rules)}
    assert sorted(connects) == ["connects", "pods-enforced"]
    assert {e.where for e in connects.values()} == {"enforced", "unenforced"}
    for entry in connects.values():
        webhook = webhook_entry(entry, "https://x/validate", b"", 5, "validate")
        rules = [(r["apiGroups"], r["resources"]) for r in webhook["rules"] if r["operations"] == ["CONNECT"]]
        assert rules == [([""], ["pods/exec", "pods/attach", "pods/portforward"])]
        assert "matchConditions" not in webhook
        assert webhook["failurePolicy"] == "Fail"


def test_every_rule_matches_every_version_and_equivalent_group_of_its_resources() -> None:
    """A kind served in another version (KServe's, or a devmlops CRD's next one), or a resource reachable through an
    equivalent group, is no way around a rule: every rule names apiVersions "*" and no webhook narrows matchPolicy
    from the API server's default, Equivalent."""
    for entry in (*VALIDATING_ENTRIES, *MUTATING_ENTRIES):
        webhook = webhook_entry(entry, "https://x/validate", b"", 5, "validate")
        assert {tuple(rule["apiVersions"]) for rule in webhook["rules"]} == {("*",)}, entry.name
        assert webhook.get("matchPolicy", "Equivalent") == "Equivalent", entry.name
