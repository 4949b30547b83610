"""What the API server sends the webhook about Services outside enforcement (webhook/registration.py)."""

from __future__ import annotations

from devmlops.core.workloads import ROUTING_LABEL_KEYS, SERVICE_SUFFIXES
from devmlops.webhook.registration import OWNED_BY_MODEL, ROUTING_CONDITION, VALIDATING_ENTRIES, webhook_entry


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
    for where in ("object.metadata.labels", "spec.template.metadata.labels", "spec.jobTemplate.spec.template"):
        assert where in ROUTING_CONDITION
    assert "oldObject != null" in ROUTING_CONDITION  # an update that drops the label is sent too
    assert "startsWith('isvc.')" in ROUTING_CONDITION
