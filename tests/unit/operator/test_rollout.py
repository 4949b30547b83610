"""The gated rollout as pure plans: a new digest tried beside the stable version, step by step, promoted only on a
passing analysis, rolled back on any failure (fake observations and clock; the real run is in
tests/integration/test_rollout.py)."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
from typing import Any

import pytest

from devmlops.core.manifests import parse_model_deployment
from devmlops.core.model import Decision, GateResult
from devmlops.core.render import CANARY_SUFFIX, LABEL_CANARY_OF, LABEL_MODEL_DEPLOYMENT
from devmlops.core.rollout import what_serves
from devmlops.operator.reconcile import (
    Approvals,
    DeleteChild,
    Observation,
    Plan,
    PostEvent,
    Retry,
    ScaleToZero,
    Serving,
    WriteChild,
    child_keys,
    plan,
)
from devmlops.operator.retrain import RequestRetrain
from devmlops.operator.rollout import Measured, analyse

OLD, NEW = "sha256:" + "aa" * 32, "sha256:" + "bb" * 32
T0 = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
PASS = Decision((GateResult(gate="signature", outcome="pass", reason="verified", policy="p"),), signer="release")
GOOD = Measured(requests=100, error_rate=0.0, blocked_rate=0.0, p99_seconds=0.05, drift_psi=0.01)
BAD = Measured(requests=100, error_rate=0.4, blocked_rate=0.0, p99_seconds=0.05, drift_psi=0.01)


def serving(digest: str) -> Serving:
    return Serving(
        digest=digest,
        signer="release",
        plan_json=json.dumps({"digest": digest}),
        policy_revision="r1",
        verifier_image="v",
    )


def md(
    digest: str = OLD, *, generation: int = 1, guard: bool = True, rollout: dict[str, Any] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": "fraud", "uri": "s3://models/fraud", "digest": digest},
        "runtime": {"kind": "triton", "image": "registry.local/triton@sha256:" + "1" * 64, "replicas": 1},
        "rollout": {
            "strategy": "canary",
            "canary": {"trafficPercent": 10, "steps": [10, 50], "stepSeconds": 60, "readySeconds": 300},
        },
    }
    if guard:
        spec["guard"] = {"rateLimit": {"requestsPerSecond": 100, "burst": 10}}
    model = {
        "apiVersion": "devmlops.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud", "namespace": "ml", "uid": "md-uid", "generation": generation},
        "spec": spec,
    }
    if rollout is not None:
        model["status"] = {"phase": "Admitted", "rollout": rollout}
    return model


class Cluster:
    """Stores what each plan writes, as the executor would, so the next plan observes it."""

    def __init__(self, model: dict[str, Any]) -> None:
        self.model = model
        self.children: dict[tuple[str, str], dict[str, Any]] = {}
        self.ready_canary = False

    def observe(
        self,
        now: dt.datetime,
        measured: Measured | None = None,
        *,
        stable_ok: bool = True,
        stable_decision: Decision | None = None,
        stable_approvals: Approvals | None = None,
        scale_to_zero: bool = False,
    ) -> Observation:
        """``stable_decision``: the stable version's decision as the observer makes it (None: not decided, as when
        no stable version differs from the spec's); ``stable_ok`` False: it passed but did not verify again."""
        rollout = (self.model.get("status") or {}).get("rollout") or {}
        stable_digest = rollout.get("stableDigest")
        digest = self.model["spec"]["model"]["digest"]
        other = bool(stable_digest and stable_digest != digest)
        passes = stable_decision is None or stable_decision.allowed
        stable = serving(stable_digest) if stable_ok and other and passes else None
        return Observation(
            model=self.model,
            decision=PASS,
            serving=serving(digest),
            children=dict(self.children),
            now=now,
            stable_serving=stable,
            stable_decision=stable_decision if other else None,
            stable_approvals=stable_approvals or Approvals(),
            scale_to_zero=scale_to_zero,
            canary_ready=(self.ready_canary, "0/1 replicas available"),
            measured=measured,
        )

    def apply(self, planned: Plan) -> Plan:
        for action in planned.actions:
            if isinstance(action, WriteChild):
                self.children[(action.wanted["kind"], action.wanted["metadata"]["name"])] = copy.deepcopy(action.wanted)
            elif isinstance(action, DeleteChild):
                del self.children[(action.child.kind, action.child.name)]
        if planned.status is not None:
            self.model = {**self.model, "status": planned.status}
        return planned

    def step(self, now: dt.datetime, measured: Measured | None = None) -> Plan:
        return self.apply(plan(self.observe(now, measured)))

    def change_to(self, digest: str, generation: int) -> None:
        spec = {**self.model["spec"], "model": {**self.model["spec"]["model"], "digest": digest}}
        self.model = {**self.model, "spec": spec, "metadata": {**self.model["metadata"], "generation": generation}}


def guard_config(deployment: dict[str, Any]) -> dict[str, Any]:
    guard = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "devmlops-guard")
    arg = next(a for a in guard["args"] if a.startswith("--config="))
    return dict(json.loads(arg.removeprefix("--config=")))


def digest_of(deployment: dict[str, Any]) -> str:
    return str(deployment["metadata"]["annotations"]["devmlops.io/model-digest"])


def condition(cluster: Cluster, kind: str) -> tuple[str, str]:
    found = next(c for c in cluster.model["status"]["conditions"] if c["type"] == kind)
    return found["status"], found["reason"]


def events(planned: Plan) -> list[str]:
    return [a.reason for a in planned.actions if isinstance(a, PostEvent)]


@pytest.fixture
def serving_old() -> Cluster:
    cluster = Cluster(md())
    first = cluster.step(T0)
    assert first.status is not None
    assert first.status["rollout"]["phase"] == "Stable"
    assert first.status["rollout"]["stableDigest"] == OLD
    assert set(cluster.children) == {("Deployment", "fraud"), ("Service", "fraud")}
    cluster.change_to(NEW, 2)
    return cluster


def test_a_new_digest_starts_beside_the_stable_version_without_traffic(serving_old: Cluster) -> None:
    started = serving_old.step(T0)
    assert started.status_first, "the webhook renders the children from the status: it must be written first"
    assert "RolloutStarted" in events(started)
    rollout = serving_old.model["status"]["rollout"]
    assert (rollout["phase"], rollout["step"], rollout["weight"]) == ("Progressing", -1, 0)
    stable, canary = serving_old.children[("Deployment", "fraud")], serving_old.children[("Deployment", "fraud-canary")]
    assert (digest_of(stable), digest_of(canary)) == (OLD, NEW)
    assert "split" not in guard_config(stable)
    # The stable Service never selects the new version's Pods.
    service = serving_old.children[("Service", "fraud")]
    pod_labels = canary["spec"]["template"]["metadata"]["labels"]
    assert not all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert serving_old.children[("Service", "fraud" + CANARY_SUFFIX)]["spec"]["selector"] == {LABEL_CANARY_OF: "fraud"}
    assert canary["metadata"]["labels"][LABEL_MODEL_DEPLOYMENT] == "fraud"  # the operator's watch maps it back
    assert serving_old.model["status"]["child"]["name"] == "fraud"  # the stable Deployment stays the named child


def test_good_steps_promote_the_new_version_and_remove_the_canary(serving_old: Cluster) -> None:
    serving_old.step(T0)
    serving_old.ready_canary = True
    first = serving_old.step(T0 + dt.timedelta(seconds=5))
    assert "RolloutStep" in events(first)
    assert "DriftRepaired" not in events(first), "a planned change is no drift"
    assert guard_config(serving_old.children[("Deployment", "fraud")])["split"] == {
        "upstream": "http://fraud-canary.ml.svc:8000",
        "weight": 10,
    }
    early = serving_old.step(T0 + dt.timedelta(seconds=30), GOOD)  # within the step: judged, not moved on
    assert serving_old.model["status"]["rollout"]["weight"] == 10
    assert not events(early)
    assert all(c["passed"] for c in serving_old.model["status"]["rollout"]["analysis"])
    serving_old.step(T0 + dt.timedelta(seconds=70), GOOD)
    assert guard_config(serving_old.children[("Deployment", "fraud")])["split"]["weight"] == 50
    promoted = serving_old.step(T0 + dt.timedelta(seconds=140), GOOD)
    assert "Promoted" in events(promoted)
    assert any(isinstance(a, DeleteChild) and a.child.name == "fraud-canary" for a in promoted.actions)
    assert set(serving_old.children) == {("Deployment", "fraud"), ("Service", "fraud")}
    stable = serving_old.children[("Deployment", "fraud")]
    assert digest_of(stable) == NEW
    assert "split" not in guard_config(stable)
    rollout = serving_old.model["status"]["rollout"]
    assert (rollout["phase"], rollout["stableDigest"]) == ("Promoted", NEW)
    assert condition(serving_old, "RolledOut") == ("True", "Promoted")
    assert rollout["stableSpec"]["model"]["digest"] == NEW
    again = serving_old.step(T0 + dt.timedelta(seconds=200))  # nothing new to try: nothing moves
    assert not [a for a in again.actions if isinstance(a, (WriteChild, DeleteChild))]


def test_a_high_error_rate_rolls_back_at_once_and_stays_rolled_back(serving_old: Cluster) -> None:
    serving_old.step(T0)
    serving_old.ready_canary = True
    serving_old.step(T0 + dt.timedelta(seconds=5))
    rolled = serving_old.step(T0 + dt.timedelta(seconds=10), BAD)  # mid-step: no waiting for the window's end
    assert "RolledBack" in events(rolled)
    assert condition(serving_old, "RolledOut") == ("False", "RolledBack")
    rollout = serving_old.model["status"]["rollout"]
    assert rollout["phase"] == "RolledBack"
    assert "errorRate 0.4 (bound 0.05)" in rollout["message"]
    assert set(serving_old.children) == {("Deployment", "fraud"), ("Service", "fraud")}
    stable = serving_old.children[("Deployment", "fraud")]
    assert digest_of(stable) == OLD
    assert "split" not in guard_config(stable)
    later = serving_old.step(T0 + dt.timedelta(minutes=10), GOOD)
    assert serving_old.model["status"]["rollout"]["phase"] == "RolledBack"
    assert not events(later)
    serving_old.change_to("sha256:" + "cc" * 32, 3)  # a new version: tried again
    assert "RolloutStarted" in events(serving_old.step(T0 + dt.timedelta(minutes=11)))


@pytest.mark.parametrize(
    ("measured", "why"),
    [
        (Measured(error="Prometheus at http://prom:9090 refused the query"), "the analysis could not run"),
        (None, "no figures were read"),
        (Measured(requests=50, error_rate=0.0, blocked_rate=0.0, p99_seconds=None), "p99LatencySeconds no figure"),
    ],
)
def test_an_analysis_that_cannot_judge_rolls_back(serving_old: Cluster, measured: Measured | None, why: str) -> None:
    serving_old.model["spec"]["rollout"]["canary"]["analysis"] = {"maxP99LatencySeconds": 0.5}
    serving_old.step(T0)
    serving_old.ready_canary = True
    serving_old.step(T0 + dt.timedelta(seconds=5))
    serving_old.step(T0 + dt.timedelta(seconds=10), measured)
    rollout = serving_old.model["status"]["rollout"]
    assert rollout["phase"] == "RolledBack"
    assert why in rollout["message"]


def test_too_few_requests_wait_and_never_promote(serving_old: Cluster) -> None:
    serving_old.step(T0)
    serving_old.ready_canary = True
    serving_old.step(T0 + dt.timedelta(seconds=5))
    serving_old.step(T0 + dt.timedelta(minutes=30), Measured(requests=3, error_rate=0.0))
    rollout = serving_old.model["status"]["rollout"]
    assert (rollout["phase"], rollout["weight"]) == ("Progressing", 10)
    assert "3 of the 20 requests" in rollout["message"]


def test_a_new_version_that_never_becomes_ready_never_gets_traffic(serving_old: Cluster) -> None:
    serving_old.step(T0)
    waiting = serving_old.step(T0 + dt.timedelta(seconds=200))
    assert serving_old.model["status"]["rollout"]["weight"] == 0
    assert not events(waiting)
    serving_old.step(T0 + dt.timedelta(seconds=301))
    rollout = serving_old.model["status"]["rollout"]
    assert rollout["phase"] == "RolledBack"
    assert "not ready within 300 s: 0/1 replicas available" in rollout["message"]
    assert all("split" not in guard_config(c) for (k, _n), c in serving_old.children.items() if k == "Deployment")


def test_a_stable_version_that_does_not_verify_again_keeps_everything_and_retries(serving_old: Cluster) -> None:
    serving_old.step(T0)
    planned = plan(serving_old.observe(T0 + dt.timedelta(seconds=5), stable_ok=False))
    assert [type(a) for a in planned.actions] == [Retry]
    assert planned.status is None


REVOKED = Decision((GateResult(gate="signature", outcome="fail", reason="key revoked", policy="p"),))
OPA_DOWN = Decision((GateResult(gate="rego", outcome="error", reason="OPA unreachable", policy="p"),))


def _rolled_back(cluster: Cluster) -> None:
    cluster.step(T0)
    cluster.step(T0 + dt.timedelta(seconds=301))  # never ready: rolled back, the stable version serves alone
    assert cluster.model["status"]["rollout"]["phase"] == "RolledBack"


@pytest.mark.parametrize("rolled_back", [False, True])
def test_a_revoked_stable_version_is_degraded_and_scaled_to_zero_not_kept_and_retried(
    serving_old: Cluster, rolled_back: bool
) -> None:
    """The stable version serves while the new one is tried, and alone after a rollback (until the spec changes):
    its key revoked, it is held to the policy as the spec's version would be (before: retried for ever, its
    Deployment kept at full scale)."""
    if rolled_back:
        _rolled_back(serving_old)
    else:
        serving_old.step(T0)
    planned = serving_old.apply(
        plan(serving_old.observe(T0 + dt.timedelta(seconds=400), stable_decision=REVOKED, scale_to_zero=True))
    )
    assert [a.child.name for a in planned.actions if isinstance(a, ScaleToZero)] == ["fraud"]
    assert planned.status is not None
    assert planned.status["phase"] == "Degraded"
    assert condition(serving_old, "Degraded") == ("True", "PolicyViolation")
    degraded = next(c for c in planned.status["conditions"] if c["type"] == "Degraded")
    assert f"the stable version {OLD}" in degraded["message"]
    assert "key revoked" in degraded["message"]
    assert condition(serving_old, "SignatureVerified")[0] == "True"  # the spec's version verifies


def test_a_stable_version_whose_approval_is_gone_waits_for_one_and_is_scaled_to_zero(serving_old: Cluster) -> None:
    """The spec's version is approved, the stable one no longer (expired, withdrawn, its approver no longer listed):
    before, only the spec's approval was looked at, so a rollback kept the stable version serving without one."""
    _rolled_back(serving_old)
    gone = Approvals(required_by=("high-risk",), approved=False)
    planned = plan(serving_old.observe(T0 + dt.timedelta(seconds=400), stable_decision=PASS, stable_approvals=gone))
    assert [a.child.name for a in planned.actions if isinstance(a, ScaleToZero)] == ["fraud"]
    assert planned.status is not None
    assert planned.status["phase"] == "AwaitingApproval"
    waiting = next(c for c in planned.status["conditions"] if c["type"] == "AwaitingApproval")
    assert waiting["status"] == "True"
    assert f"the stable version {OLD}" in waiting["message"]
    approved = Approvals(required_by=("high-risk",), approved=True, approver="bob", name="ok")
    again = plan(serving_old.observe(T0 + dt.timedelta(seconds=401), stable_decision=PASS, stable_approvals=approved))
    assert again.status is not None
    assert again.status["phase"] == "Admitted"
    assert not [a for a in again.actions if isinstance(a, ScaleToZero)]


@pytest.mark.parametrize("why", ["revoked", "unapproved"])
def test_a_new_version_that_no_longer_passes_is_scaled_to_zero_with_the_stable_one(
    serving_old: Cluster, why: str
) -> None:
    """The spec's version runs as "fraud-canary" beside the stable one, behind a Service of its own: revoked, or its
    approval gone, it is scaled to zero too (before, only the child the status names was, and the revoked version
    ran on)."""
    serving_old.step(T0)
    assert ("Deployment", "fraud-canary") in serving_old.children
    observed = serving_old.observe(T0 + dt.timedelta(seconds=5), scale_to_zero=True)
    if why == "revoked":
        observed = dataclasses.replace(observed, decision=REVOKED, serving=None)
    else:
        observed = dataclasses.replace(observed, approvals=Approvals(required_by=("high-risk",), approved=False))
    planned = plan(observed)
    assert sorted(a.child.name for a in planned.actions if isinstance(a, ScaleToZero)) == ["fraud", "fraud-canary"]


def test_a_stable_version_that_cannot_be_decided_now_keeps_everything_and_retries(serving_old: Cluster) -> None:
    serving_old.step(T0)
    planned = plan(serving_old.observe(T0 + dt.timedelta(seconds=5), stable_decision=OPA_DOWN))
    assert [type(a) for a in planned.actions] == [Retry]
    assert planned.status is None


def test_a_stable_version_without_a_guard_is_replaced_directly() -> None:
    cluster = Cluster(md(guard=False, rollout=None))
    cluster.model["spec"]["rollout"] = {"strategy": "direct"}
    cluster.step(T0)
    cluster.model["spec"] = {**md(NEW)["spec"]}
    cluster.model["metadata"]["generation"] = 2
    cluster.model["status"]["rollout"] = {"phase": "Stable", "stableDigest": OLD, "stableSpec": md(guard=False)["spec"]}
    cluster.step(T0)
    assert cluster.model["status"]["rollout"]["phase"] == "Promoted"
    assert "no guard to split" in cluster.model["status"]["rollout"]["message"]
    assert digest_of(cluster.children[("Deployment", "fraud")]) == NEW


def test_child_keys_cover_the_canary_children_so_a_finished_rollout_finds_them() -> None:
    keys = [(ref.kind, ref.name) for ref in child_keys(md())]
    assert set(keys[:4]) == {
        ("Deployment", "fraud"),
        ("Service", "fraud"),
        ("Deployment", "fraud-canary"),
        ("Service", "fraud-canary"),
    }


def test_what_serves_ignores_a_status_about_another_spec() -> None:
    progressing = {"phase": "Progressing", "generation": 2, "canaryDigest": NEW, "stableDigest": OLD, "weight": 10}
    progressing["stableSpec"] = md()["spec"]
    parsed = parse_model_deployment(md(NEW, generation=2))
    assert what_serves(parsed, {"rollout": progressing}, 2).canary
    assert what_serves(parsed, {"rollout": progressing}, 3).stable is None  # the spec moved on since
    other = parse_model_deployment(md("sha256:" + "cc" * 32, generation=2))
    assert what_serves(other, {"rollout": progressing}, 2).stable is None


def test_analysis_bounds() -> None:
    canary = parse_model_deployment(md()).spec.gated_rollout
    assert canary is not None
    verdict, checks, _why = analyse(GOOD, canary.analysis)
    assert verdict == "pass"
    assert [c.check for c in checks] == ["errorRate"]
    assert analyse(BAD, canary.analysis)[0] == "fail"
    assert analyse(Measured(requests=19, error_rate=1.0), canary.analysis)[0] == "wait"


def test_a_rollout_dropped_from_the_spec_mid_way_still_has_its_new_version_removed(serving_old: Cluster) -> None:
    """An editor removes spec.rollout while a new version runs beside the stable one: the spec's version now serves
    alone, and the new version's children (found through the status, which still records the rollout) are deleted,
    not left running where nothing renders them and revocation does not reach them."""
    serving_old.step(T0)
    assert ("Deployment", "fraud-canary") in serving_old.children
    spec = {k: v for k, v in serving_old.model["spec"].items() if k != "rollout"}
    serving_old.model = {
        **serving_old.model,
        "spec": spec,
        "metadata": {**serving_old.model["metadata"], "generation": 3},
    }
    observed = {(ref.kind, ref.name) for ref in child_keys(serving_old.model)}
    assert {("Deployment", "fraud-canary"), ("Service", "fraud-canary")} <= observed
    dropped = serving_old.step(T0 + dt.timedelta(seconds=5))
    deleted = {(a.child.kind, a.child.name) for a in dropped.actions if isinstance(a, DeleteChild)}
    assert deleted == {("Deployment", "fraud-canary"), ("Service", "fraud-canary")}
    assert digest_of(serving_old.children[("Deployment", "fraud")]) == NEW
    assert dropped.status is not None
    assert dropped.status["rollout"] is None, "the rollout record is removed (null in the status merge patch)"


def test_objects_another_owner_controls_under_the_canary_names_are_never_deleted() -> None:
    """A ModelDeployment named "fraud-canary" owns a Deployment and a Service under the names of fraud's new version:
    fraud's operator, with no rollout running, must not delete them (it deletes only what it controls)."""
    cluster = Cluster(md())
    cluster.step(T0)
    foreign = {"name": "fraud-canary", "ownerReferences": [{"kind": "ModelDeployment", "name": "fraud-canary",
                                                            "uid": "other-uid", "controller": True}]}  # fmt: skip
    cluster.children[("Deployment", "fraud-canary")] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": foreign,
    }
    cluster.children[("Service", "fraud-canary")] = {"apiVersion": "v1", "kind": "Service", "metadata": foreign}
    again = plan(cluster.observe(T0 + dt.timedelta(seconds=5)))
    assert not [a for a in again.actions if isinstance(a, DeleteChild)]


def test_a_retrain_request_while_the_stable_version_serves_names_that_version_whole() -> None:
    """Rolled back, the stable version serves: a retrain request about its drift carries its digest and its uri, not
    the new version's uri beside the stable digest (the retraining pipeline would fetch other bytes than measured)."""
    cluster = Cluster(md())
    cluster.model["spec"]["guard"]["drift"] = {"threshold": 0.2}
    cluster.step(T0)
    spec = copy.deepcopy(cluster.model["spec"])
    spec["model"] = {**spec["model"], "digest": NEW, "uri": "s3://models/fraud-v2"}
    cluster.model = {**cluster.model, "spec": spec, "metadata": {**cluster.model["metadata"], "generation": 2}}
    cluster.step(T0)
    cluster.ready_canary = True
    cluster.step(T0 + dt.timedelta(seconds=5))
    cluster.step(T0 + dt.timedelta(seconds=10), BAD)
    assert cluster.model["status"]["rollout"]["phase"] == "RolledBack"
    observed = dataclasses.replace(cluster.observe(T0 + dt.timedelta(seconds=15)), drift={"0": 0.9})
    requests = [a for a in plan(observed).actions if isinstance(a, RequestRetrain)]
    assert [r.payload["model"] for r in requests] == [{"name": "fraud", "uri": "s3://models/fraud", "digest": OLD}]
