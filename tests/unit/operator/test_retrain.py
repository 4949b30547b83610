"""Retrain requests as pure decisions: one per drift episode of the version that serves, carrying what was measured;
nothing else changes (the end-to-end run, a real guard's drift read from Prometheus, is in
tests/integration/test_retrain.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from devmlops.core.model import Decision, GateResult
from devmlops.operator.reconcile import Observation, PostEvent, Serving, WriteChild, plan
from devmlops.operator.retrain import RETRAIN_KIND, RequestRetrain, retrain_step

DIGEST = "sha256:" + "ab" * 32
T0 = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
PASS = Decision((GateResult(gate="signature", outcome="pass", reason="verified", policy="p"),), signer="release")
SERVING = Serving(digest=DIGEST, signer="release", plan_json="{}", policy_revision="r1", verifier_image="v")


def md(status: dict[str, Any] | None = None, *, drift: bool = True) -> dict[str, Any]:
    guard: dict[str, Any] = {"protocol": "v2"}
    if drift:
        guard["drift"] = {"threshold": 0.2}
    model = {
        "metadata": {"name": "fraud", "namespace": "ml", "uid": "u1", "generation": 1},
        "spec": {
            "model": {"name": "fraud", "uri": "s3://models/fraud", "digest": DIGEST},
            "runtime": {"kind": "triton", "image": "registry.local/triton@sha256:" + "1" * 64},
            "guard": guard,
        },
    }
    if status is not None:
        model["status"] = status
    return model


def test_a_drifted_feature_asks_once_with_the_evidence() -> None:
    status, request = retrain_step(md(), digest=DIGEST, threshold=0.2, drift={"3": 0.41, "1": 0.05}, now="t1")
    assert isinstance(request, RequestRetrain)
    assert request.payload["kind"] == RETRAIN_KIND
    assert request.payload["model"] == {"name": "fraud", "uri": "s3://models/fraud", "digest": DIGEST}
    assert request.payload["drift"]["features"] == {"3": 0.41}
    assert request.payload["drift"]["measured"] == {"3": 0.41, "1": 0.05}
    assert "PSI over 0.2: 3 0.41" in request.message
    assert status == {"active": True, "digest": DIGEST, "requested": "t1", "features": {"3": 0.41}}
    again = retrain_step(md({"retrain": status}), digest=DIGEST, threshold=0.2, drift={"3": 0.5}, now="t2")
    assert again == (None, None), "one request per episode"


def test_an_episode_ends_when_no_feature_is_over_and_the_next_one_asks_again() -> None:
    active = {"active": True, "digest": DIGEST, "requested": "t1", "features": {"3": 0.41}, "notified": True}
    cleared, request = retrain_step(md({"retrain": active}), digest=DIGEST, threshold=0.2, drift={"3": 0.1}, now="t2")
    assert request is None
    assert cleared is not None
    assert (cleared["active"], cleared["cleared"]) == (False, "t2")
    _status, later = retrain_step(md({"retrain": cleared}), digest=DIGEST, threshold=0.2, drift={"3": 0.3}, now="t3")
    assert later is not None


def test_a_request_whose_post_failed_is_asked_again() -> None:
    failed = {"active": True, "digest": DIGEST, "requested": "t1", "features": {"3": 0.41}, "notified": False}
    _status, request = retrain_step(md({"retrain": failed}), digest=DIGEST, threshold=0.2, drift={"3": 0.4}, now="t2")
    assert request is not None


def test_nothing_is_asked_without_a_measurement_or_a_threshold() -> None:
    assert retrain_step(md(), digest=DIGEST, threshold=0.2, drift=None, now="t") == (None, None)
    assert retrain_step(md(), digest=DIGEST, threshold=None, drift={"3": 9.0}, now="t") == (None, None)


def test_the_plan_asks_with_an_event_and_changes_nothing_served() -> None:
    quiet = plan(Observation(model=md(), decision=PASS, serving=SERVING, now=T0, drift={"0": 0.01}))
    drifted = plan(Observation(model=md(), decision=PASS, serving=SERVING, now=T0, drift={"0": 0.9}))
    requests = [a for a in drifted.actions if isinstance(a, RequestRetrain)]
    assert len(requests) == 1
    assert any(isinstance(a, PostEvent) and a.reason == "RetrainRequested" for a in drifted.actions)
    assert drifted.status is not None
    assert drifted.status["retrain"]["active"] is True
    assert [a for a in drifted.actions if isinstance(a, WriteChild)] == [
        a for a in quiet.actions if isinstance(a, WriteChild)
    ], "a retrain request changes no child"
    no_monitoring = plan(Observation(model=md(drift=False), decision=PASS, serving=SERVING, now=T0, drift={"0": 0.9}))
    assert not [a for a in no_monitoring.actions if isinstance(a, RequestRetrain)]
