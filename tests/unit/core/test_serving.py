"""One "may this be served" function: the stage decides whether the approval gate runs; who asks comes from one
place (model_request)."""

from __future__ import annotations

from devmlops.core.evidence import ApprovalState, Document, Evidence
from devmlops.core.policy import PolicySet
from devmlops.core.serving import may_serve, model_request
from tests.unit.core.fakes import FakeVerifier, bundle
from tests.unit.core.test_risk_tier import model, policy


def test_the_serving_stage_needs_the_approval_the_admission_stage_leaves_to_the_operator() -> None:
    high, policies = model("high"), PolicySet((policy(),))
    evidence = Evidence(signatures=(Document(source="spec.signature.inline", text=bundle("k")),))
    admitted = may_serve(high, policies, evidence, FakeVerifier(), stage="admission")
    assert admitted.allowed, admitted.message
    waiting = may_serve(high, policies, evidence, FakeVerifier(), stage="serving")
    assert not waiting.allowed
    assert [r.gate for r in waiting.results if r.blocking] == ["approval"]


def test_a_model_request_is_an_update_that_changes_nothing_or_a_create() -> None:
    high = model("high")
    update = model_request(high, uid="u", username="devmlops-operator")
    assert (update.operation, update.object, update.old_object) == ("UPDATE", high, high)
    create = model_request(high, uid="u", username="devmlops-check", operation="CREATE")
    assert (create.operation, create.old_object, create.namespace, create.name) == ("CREATE", None, "ml", "fraud")
    assert ApprovalState(approved=False).approved is False
