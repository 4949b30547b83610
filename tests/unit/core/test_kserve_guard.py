"""KServe models behind the guard (issue 16), in the pure core: a cluster admin declares which ClusterServingRuntimes
run MLServer (a ClusterModelPolicy's spec.guard.mlserverRuntimes); a kserve ModelDeployment with spec.guard is
admitted only on a runtime a selecting ClusterModelPolicy declares, and its InferenceService carries the guard as
KServe's collocated transformer, the same guard Triton gets, with MLServer on the Pod's loopback."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from devmlops.core.decision import decide
from devmlops.core.manifests import parse_model_deployment
from devmlops.core.model import Decision
from devmlops.core.plan import VerificationPlan
from devmlops.core.policy import PolicySet, compile_model_policy, compile_policy
from devmlops.core.render import (
    ANNOTATION_VERIFICATION,
    GUARD_CONTAINER,
    GUARD_METRICS_PORT,
    KSERVE_GUARD_CONTAINER,
    MANAGED_BY,
    build_triton,
    render_children,
)
from devmlops.errors import InvalidInputError
from tests.unit.core.fakes import DIGEST, FakeVerifier
from tests.unit.core.test_gates import policy
from tests.unit.core.test_team_policies import NAMESPACE, cluster, evidence, md_request, team

MLSERVER = "mlserver-1-7"
GUARD = {"protocol": "v2", "perClient": {"requestsPerSecond": 5, "burst": 10}, "input": {"injection": True}}
KSERVE_ON_MLSERVER = {"kind": "kserve", "servingRuntime": MLSERVER}


# -- the declaration: a ClusterModelPolicy's, checked and named ------------------------------------------------------


def test_a_cluster_policy_declares_mlserver_runtimes_under_its_guard() -> None:
    policy = cluster(guard={"mlserverRuntimes": [MLSERVER, "mlserver-gpu"]})
    assert policy.mlserver_runtimes == (MLSERVER, "mlserver-gpu")
    assert cluster().mlserver_runtimes == ()


@pytest.mark.parametrize(
    ("runtimes", "message"),
    [
        ([MLSERVER, MLSERVER], "spec.guard.mlserverRuntimes: names must be unique, got ['mlserver-1-7']"),
        ([], "spec.guard.mlserverRuntimes"),
        (["MLServer"], "spec.guard.mlserverRuntimes[0]"),
        ([""], "spec.guard.mlserverRuntimes[0]"),
        ("mlserver", "spec.guard.mlserverRuntimes"),
    ],
)
def test_a_wrong_declaration_is_refused_naming_the_field(runtimes: Any, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        cluster(guard={"mlserverRuntimes": runtimes})
    assert message in caught.value.user_message
    assert "ClusterModelPolicy platform" in caught.value.user_message


def test_a_team_model_policy_cannot_declare_a_runtime() -> None:
    """A namespace editor writes ModelPolicies; the declaration decides where the guard is trusted to be the only way
    in, so only a cluster admin's ClusterModelPolicy may make it."""
    with pytest.raises(InvalidInputError) as caught:
        compile_model_policy(
            {"metadata": {"name": "ours", "namespace": NAMESPACE}, "spec": {"guard": {"mlserverRuntimes": [MLSERVER]}}}
        )
    assert "ModelPolicy team-a/ours: spec.guard: unknown field" in caught.value.user_message


# -- the gate: declared by a selecting ClusterModelPolicy, or refused naming runtime and field ------------------------


def _decide(*policies: Any, runtime: dict[str, Any] = KSERVE_ON_MLSERVER, **spec: Any) -> Decision:
    request = md_request(runtime=runtime, **spec)
    return decide(request, PolicySet(tuple(policies)), evidence("platform"), FakeVerifier())


def _guard_result(decision: Decision, policy: str = "platform") -> Any:
    return next(r for r in decision.results if r.gate == "guard" and r.policy == policy)


def test_a_guarded_kserve_model_on_a_declared_runtime_is_admitted() -> None:
    decision = _decide(cluster(guard={"mlserverRuntimes": [MLSERVER]}), guard=GUARD)
    assert decision.allowed, decision.message
    assert _guard_result(decision).outcome == "pass"


def test_one_selecting_cluster_policy_declaring_the_runtime_suffices() -> None:
    declaring = cluster("mlserver-runtimes", guard={"mlserverRuntimes": [MLSERVER]})
    demanding = cluster(guard={"required": True, "limits": {"perClient": {"requestsPerSecond": 10, "burst": 20}}})
    decision = _decide(demanding, declaring, team(), guard=GUARD)
    assert decision.allowed, decision.message
    assert _guard_result(decision).outcome == "pass"  # the demanding policy's gate sees the other's declaration
    assert _guard_result(decision, f"{NAMESPACE}/ours").outcome == "pass"  # the team's policy: the same declarations


@pytest.mark.parametrize(
    ("policies", "runtime", "found"),
    [
        ((cluster(),), KSERVE_ON_MLSERVER, "with spec.runtime.servingRuntime 'mlserver-1-7'"),
        ((cluster(guard={"mlserverRuntimes": ["other"]}),), KSERVE_ON_MLSERVER, "(declared: ['other'])"),
        ((cluster(guard={"mlserverRuntimes": [MLSERVER]}),), {"kind": "kserve"}, "without spec.runtime.servingRuntime"),
        # declared, but by a ClusterModelPolicy that does not select the model
        (
            (cluster(), cluster("elsewhere", models=["other-*"], guard={"mlserverRuntimes": [MLSERVER]})),
            KSERVE_ON_MLSERVER,
            "(declared: [])",
        ),
    ],
)
def test_a_guard_on_a_runtime_no_selecting_cluster_policy_declares_is_refused(
    policies: tuple[Any, ...], runtime: dict[str, Any], found: str
) -> None:
    decision = _decide(*policies, runtime=runtime, guard=GUARD)
    assert not decision.allowed
    reason = _guard_result(decision).reason
    assert "spec.runtime.kind: found 'kserve'" in reason
    assert found in reason
    assert "spec.guard.mlserverRuntimes" in reason
    assert "spec.guard.mlserverRuntimes" in _guard_result(decision).hint


def test_a_declaration_alone_demands_no_guard() -> None:
    decision = _decide(cluster(guard={"mlserverRuntimes": [MLSERVER]}))
    assert decision.allowed, decision.message
    assert _guard_result(decision).outcome == "skip"


# -- the rendering: the Triton guard, as KServe's collocated transformer -----------------------------------------------


def _model(**runtime: Any) -> Any:
    return parse_model_deployment(
        {
            "metadata": {"name": "fraud", "namespace": "ml", "uid": "u1"},
            "spec": {
                "model": {"name": "fraud", "uri": "s3://models/fraud", "digest": DIGEST},
                "runtime": runtime,
                "guard": {**GUARD, "drift": {"threshold": 0.2}},
            },
        }
    )


BASELINE = '{"features":[{"edges":[1.0],"index":0,"name":"x","proportions":[0.5,0.5]}],"rows":2}'


def test_the_inference_service_carries_the_guard_as_kserves_transformer_container() -> None:
    (isvc,) = render_children(
        _model(**KSERVE_ON_MLSERVER), plan_json="{}", verifier_image="devmlops@v1", baseline_json=BASELINE
    )
    predictor = isvc["spec"]["predictor"]
    (guard,) = predictor["containers"]
    assert guard["name"] == "transformer-container"  # KServe's predictor Service targets its first port
    assert guard["ports"][0] == {"name": "http", "containerPort": 8000}
    # The same guard as Triton's: one rendering, only the container's name differs.
    triton, _service = build_triton(
        _model(kind="triton", image="t@sha256:" + "1" * 64),
        plan_json="{}",
        verifier_image="devmlops@v1",
        policy_revision="",
        baseline_json=BASELINE,
    )
    triton_guard = triton["spec"]["template"]["spec"]["containers"][1]
    assert {**triton_guard, "name": "transformer-container"} == guard
    assert "--upstream=http://127.0.0.1:8080" in guard["args"]
    assert any(a.startswith("--config=") and '"baseline"' in a for a in guard["args"])
    model = predictor["model"]
    assert model["runtime"] == MLSERVER
    assert model["env"] == [
        {"name": "MLSERVER_HOST", "value": "127.0.0.1"},
        {"name": "MLSERVER_HTTP_PORT", "value": "8080"},
        {"name": "MLSERVER_GRPC_PORT", "value": "8081"},
        {"name": "MLSERVER_METRICS_PORT", "value": "8082"},
    ]
    assert model["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8000}
    assert "ports" not in model


def test_both_runtimes_guards_are_scrapeable_by_the_same_label_and_port_name() -> None:
    """The chart's PodMonitor selects Pods labelled MANAGED_BY and scrapes the port named "metrics" of the guard
    container. KServe gives its predictor Pods the InferenceService's labels (v0.16, predictor.go: buildObjectMeta),
    so the label on the InferenceService is the label on the Pod."""
    (isvc,) = render_children(_model(**KSERVE_ON_MLSERVER), plan_json="{}", verifier_image="devmlops@v1")
    triton, _service = build_triton(
        _model(kind="triton", image="t@sha256:" + "1" * 64),
        plan_json="{}",
        verifier_image="devmlops@v1",
        policy_revision="",
    )
    template = triton["spec"]["template"]
    pods = {
        KSERVE_GUARD_CONTAINER: (isvc["metadata"]["labels"], isvc["spec"]["predictor"]["containers"]),
        GUARD_CONTAINER: (template["metadata"]["labels"], template["spec"]["containers"]),
    }
    for guard_name, (labels, containers) in pods.items():
        assert MANAGED_BY.items() <= labels.items(), guard_name
        (guard,) = [c for c in containers if c["name"] == guard_name]
        assert {"name": "metrics", "containerPort": GUARD_METRICS_PORT} in guard["ports"], guard_name
        assert f"--metrics-listen=0.0.0.0:{GUARD_METRICS_PORT}" in guard["args"], guard_name


def test_a_kserve_model_without_a_guard_is_rendered_as_before() -> None:
    plain = parse_model_deployment(
        {
            "metadata": {"name": "fraud", "namespace": "ml", "uid": "u1"},
            "spec": {
                "model": {"name": "fraud", "uri": "s3://models/fraud", "digest": DIGEST},
                "runtime": KSERVE_ON_MLSERVER,
            },
        }
    )
    (isvc,) = render_children(plain, plan_json="{}", verifier_image="devmlops@v1")
    assert "containers" not in isvc["spec"]["predictor"]
    assert set(isvc["spec"]["predictor"]["model"]) == {"storageUri", "runtime"}


def test_only_a_guarded_kserve_models_plan_refuses_mlserver_settings() -> None:
    """MLServer reads a settings.json at the model root over MLSERVER_HOST: the plan of a model it serves behind the
    guard tells the storage initializer to refuse one; other models' plans stay as the operator derived them."""
    plan = VerificationPlan.for_policies("bundle", DIGEST, [compile_policy(policy())]).to_json()
    (isvc,) = render_children(_model(**KSERVE_ON_MLSERVER), plan_json=plan, verifier_image="devmlops@v1")
    rendered = VerificationPlan.from_json(isvc["spec"]["predictor"]["annotations"][ANNOTATION_VERIFICATION])
    assert rendered.mlserver_guarded
    assert rendered.same_as(replace(VerificationPlan.from_json(plan), mlserver_guarded=True, runtime="kserve"))
    plain = parse_model_deployment(
        {
            "metadata": {"name": "fraud", "namespace": "ml", "uid": "u1"},
            "spec": {
                "model": {"name": "fraud", "uri": "s3://models/fraud", "digest": DIGEST},
                "runtime": KSERVE_ON_MLSERVER,
            },
        }
    )
    (unguarded,) = render_children(plain, plan_json=plan, verifier_image="devmlops@v1")
    unguarded_plan = VerificationPlan.from_json(unguarded["spec"]["predictor"]["annotations"][ANNOTATION_VERIFICATION])
    assert unguarded_plan.same_as(replace(VerificationPlan.from_json(plan), runtime="kserve"))
    triton, _service = build_triton(
        _model(kind="triton", image="t@sha256:" + "1" * 64), plan_json=plan, verifier_image="v", policy_revision=""
    )
    triton_plan = VerificationPlan.from_json(triton["spec"]["template"]["spec"]["initContainers"][0]["env"][0]["value"])
    assert triton_plan.same_as(replace(VerificationPlan.from_json(plan), runtime="triton"))
