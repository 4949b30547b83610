"""Property 1b, before the model exists: an EndpointSlice waiting under a future model's Service name.

The webhook refuses a slice labelled ``kubernetes.io/service-name`` with a model's Service name from anyone but the
EndpointSlice controller, but only once that model exists: a slice written earlier names "no model's Service" and is
admitted. The controller keeps only the slices it manages (``endpointslice.kubernetes.io/managed-by``), so mallory's
stays when the model arrives, and kube-proxy joins it to the model's new Service: her address among its backends.
Mallory, a namespace editor, writes slices under ``fraud`` and ``fraud-canary`` (Triton's Service and its gated
rollout's) or ``fraud-predictor`` (KServe's) before anyone deploys "fraud". A new ModelDeployment whose Service names
already carry a slice that the EndpointSlice controller does not keep for a model's Service is refused, naming the
slice; once the slice is gone the same ModelDeployment is admitted and served. On main before the fix the
ModelDeployment was admitted and her slice stayed under the model's Service name (both tests failed waiting for the
refusal)."""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import ALLOWED_IMAGES, TRITON, admitted, policy_name, serve
from tests.integration.attacks.test_traffic import _slice
from tests.integration.support import GROUP, VERSION, SignedModel, eventually, signed_by_evidence, trusting


def _refusal(admin: k8s.ApiClient, namespace: str, doc: dict[str, Any]) -> str:
    """The webhook's refusal of a dry-run create of ``doc`` ('' when admitted)."""
    create = k8s.CustomObjectsApi(admin).create_namespaced_custom_object
    try:
        create(GROUP, VERSION, namespace, "modeldeployments", doc, dry_run="All")
    except ApiException as exc:
        return str(exc.body)
    return ""


def _model(attack_model: SignedModel, **spec: Any) -> dict[str, Any]:
    doc = signed_by_evidence("fraud", attack_model, **spec)
    doc["metadata"]["labels"] = {"devmlops.io/eu-ai-act-risk": "minimal"}
    return doc


def test_a_slice_waiting_under_a_triton_models_service_names_blocks_the_model_until_removed(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, enforced_namespace: str, attack_model: SignedModel, trusted: Any
) -> None:
    namespace = enforced_namespace
    discovery = k8s.DiscoveryV1Api(mallory)
    for service in ("fraud", "fraud-canary"):  # no model named fraud yet: "names no model's Service"
        admitted(discovery.create_namespaced_endpoint_slice, namespace, _slice(f"early-{service}", service))
    doc = _model(attack_model, runtime={"kind": "triton", "image": TRITON})
    for service in ("fraud", "fraud-canary"):  # the refusal names one slice at a time: removed, the next is named
        slice_name = f"early-{service}"
        message = eventually(lambda name=slice_name: name in (found := _refusal(admin, namespace, doc)) and found,
                             timeout=30, what=f"the waiting slice {slice_name} named in the refusal")  # fmt: skip
        assert f"EndpointSlice {namespace}/{slice_name} labelled kubernetes.io/service-name={service} " in message
        assert "the EndpointSlice controller does not keep it" in message
        discovery.delete_namespaced_endpoint_slice(slice_name, namespace)
    served = serve(admin, namespace, attack_model, trusted, runtime={"kind": "triton", "image": TRITON})
    assert served.child["kind"] == "Deployment"


def test_outside_enforcement_a_slice_waiting_under_kserves_predictor_name_blocks_the_model(
    admin: k8s.ApiClient, mallory: k8s.ApiClient, stack: DevmlopsStack, plain_namespace: str, attack_model: SignedModel
) -> None:
    namespace = plain_namespace
    allow = {"images": list(ALLOWED_IMAGES)}
    with trusting(admin, stack, namespace, attack_model, policy=policy_name(namespace), allow=allow):
        discovery = k8s.DiscoveryV1Api(mallory)
        admitted(discovery.create_namespaced_endpoint_slice, namespace, _slice("early", "fraud-predictor"))
        doc = _model(attack_model)
        message = eventually(lambda: "EndpointSlice" in (found := _refusal(admin, namespace, doc)) and found,
                             timeout=30, what="the waiting slice named in the refusal")  # fmt: skip
        assert f"EndpointSlice {namespace}/early labelled kubernetes.io/service-name=fraud-predictor " in message
