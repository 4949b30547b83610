"""Drift is repaired, not merged: a child that differs from what devmlops renders is replaced whole by the operator,
with a Warning Event and a metric. With the webhook in place nobody but the operator can write a child, so the test
makes the drift the one way it can happen: while the webhook configuration is gone (an admin removed it, or the
child predates the install)."""

from __future__ import annotations

import re
import urllib.request

import pytest
from kubernetes import client as k8s

from devmlops.harness.stack import DevmlopsStack
from tests.integration.support import SignedModel, eventually, md_status, signed_by_evidence, signed_model, trusting

GROUP, VERSION = "serving.kserve.io", "v1beta1"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> SignedModel:
    return signed_model(tmp_path_factory.mktemp("drift"))


def drift_count(stack: DevmlopsStack) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.operator_metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'^devmlops_child_drift_total\{kind="InferenceService"\} ([0-9.e+]+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_child_changed_behind_the_webhooks_back_is_replaced_whole_with_a_warning(
    admin: k8s.ApiClient, stack: DevmlopsStack, namespace: str, model: SignedModel
) -> None:
    custom = k8s.CustomObjectsApi(admin)
    with trusting(admin, stack, namespace, model, policy=f"drift-{namespace}"):
        custom.create_namespaced_custom_object(
            "devmlops.io", "v1alpha1", namespace, "modeldeployments", signed_by_evidence("fraud", model)
        )
        eventually(lambda: md_status(admin, namespace).get("phase") == "Admitted", what="the model admitted")
        rendered = eventually(
            lambda: custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservices", "fraud"),
            what="the InferenceService",
        )
        before = drift_count(stack)
        stack.unregister_webhook()
        try:
            tampered = {
                "metadata": {"annotations": {"example.com/backdoor": "on"}},
                "spec": {
                    "predictor": {"model": {"storageUri": "s3://attacker/model"}},
                    "transformer": {"containers": [{"name": "t", "image": "evil/transformer:latest"}]},
                },
            }
            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservices", "fraud", tampered)
        finally:
            stack.register_webhook()

        def repaired() -> bool:
            isvc = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservices", "fraud")
            spec = isvc["spec"]
            return "transformer" not in spec and spec["predictor"] == rendered["spec"]["predictor"]

        eventually(repaired, timeout=30, what="the operator replacing the drifted InferenceService")

        def drift_warnings() -> list[k8s.CoreV1Event]:
            events = k8s.CoreV1Api(admin).list_namespaced_event(namespace).items
            return [e for e in events if e.reason == "DriftRepaired" and e.type == "Warning"]

        warnings = eventually(drift_warnings, timeout=10, what="the DriftRepaired Warning Event (posted after the PUT)")
        assert "spec.transformer" in warnings[0].message
        assert "storageUri" in warnings[0].message
        assert drift_count(stack) == before + 1
