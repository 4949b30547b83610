"""The edit-role review: mallory bound to Kubernetes's own ``edit`` ClusterRole (docs/threat-model.md), through the
real API server, with the rights the hand-written attack Role never gave her (ServiceAccounts, their tokens and
impersonation, PersistentVolumeClaims, HorizontalPodAutoscalers, PodDisruptionBudgets, NetworkPolicies, Leases,
Ingresses, ResourceClaims).

1. A ServiceAccount the requester can act as is no second person. Four eyes asked whether the approver may act as
   the ServiceAccount that requested a model, never the other way round: mallory, who edits the CI namespace too
   (``edit`` lets her mint tokens for its ServiceAccounts), created her high-risk model as herself and approved it
   with a token she minted for the CI namespace's approver bot, which a policy names: admitted.

Tried with throwaway probes through the real stack and held (no test kept): her HorizontalPodAutoscalers (minimum
and maximum 3 and 4) on a served Triton model's Deployment and ReplicaSet, with the HPA controller running, and a
PodDisruptionBudget over its Pods: the HPA scaled the served model (allowed), and after the key was revoked the
Deployment, the ReplicaSet and the Pods went to zero and stayed there (the HPA controller leaves a target at zero
alone, and a scale up is reviewed whoever sends it); a ServiceAccount of her namespace named ``devmlops-operator``,
by token and by impersonation, may not write the model's Deployment (writers are compared by whole username). Her
Ingresses (to the model's Service, to an ExternalName of her own), NetworkPolicies and Leases are admitted: an
Ingress is a stated residual risk (traffic steering outside what devmlops owns), a NetworkPolicy can only cut traffic
(a canary nobody's metrics reach is never promoted; an initializer that cannot download leaves no Pod), and nothing
of devmlops, KServe or the cluster leads on a team's Leases.
"""

from __future__ import annotations

from kubernetes import client as k8s

from devmlops.harness.stack import DevmlopsStack
from tests.integration.attacks.conftest import denied
from tests.integration.attacks.test_four_eyes import approval, approval_required, approve, high_risk, phase
from tests.integration.attacks.test_round2_review import ci_bots  # noqa: F401
from tests.integration.support import SignedModel, create_md, eventually


def test_a_service_account_the_requester_can_act_as_is_no_second_person(
    admin: k8s.ApiClient,
    mallory: k8s.ApiClient,
    stack: DevmlopsStack,
    enforced_namespace: str,
    ci_bots: tuple[str, k8s.ApiClient, k8s.ApiClient],  # noqa: F811 (the fixture imported above)
    attack_model: SignedModel,
) -> None:
    namespace, (ci, _release_bot, approver_bot) = enforced_namespace, ci_bots
    approver = f"system:serviceaccount:{ci}:approver-bot"
    with approval_required(admin, stack, namespace, attack_model, f"edit-4e-{namespace}", {"users": [approver]}):
        create_md(mallory, namespace, high_risk(attack_model))
        eventually(lambda: phase(admin, namespace) == "AwaitingApproval", what="AwaitingApproval")
        message = denied(approve, approver_bot, namespace, approval("bot-approves", attack_model.digest))
        assert f"the requester 'mallory' can act as the approver {approver!r}" in message, message
