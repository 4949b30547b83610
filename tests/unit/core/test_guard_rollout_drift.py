"""The guard's configuration for rollouts and drift (core/guard.py): the weighted split is exact over any 100
inference requests, the config carries split and baseline and names a wrong field, and a policy's drift demands are
enforced by guard_problems and tightest."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devmlops.core.drift import baseline_from_columns
from devmlops.core.guard import (
    Split,
    drift_required,
    guard_config_json,
    guard_problems,
    is_inference,
    parse_guard_config,
    tightest,
)
from devmlops.core.manifests import Guard, GuardPolicy

CANARY = "http://fraud-canary.ml.svc:8000"
BASELINE = baseline_from_columns([[float(i) for i in range(50)]], ["x"]).to_json()


@pytest.mark.parametrize("weight", [0, 1, 7, 10, 33, 50, 67, 99, 100])
def test_over_any_100_consecutive_inference_requests_exactly_weight_go_to_the_split(weight: int) -> None:
    split = Split(upstream=CANARY, weight=weight)
    turns = [split.takes(n) for n in range(1000)]
    for start in range(0, 901, 37):
        assert sum(turns[start : start + 100]) == weight
    if 0 < weight < 100:  # smooth: never a run much longer than 100 / weight
        longest, run = 0, 0
        for turn in turns:
            run = 0 if turn else run + 1
            longest = max(longest, run)
        assert longest <= 100 // weight + 1


@pytest.mark.parametrize(
    ("upstream", "weight", "message"),
    [
        ("fraud-canary:8000", 10, "split.upstream: got 'fraud-canary:8000', expected http"),
        ("http://canary/path", 10, "split.upstream"),
        (CANARY, 101, "split.weight: got 101, expected an integer from 0 to 100"),
        (CANARY, -1, "split.weight: got -1"),
        (CANARY, True, "split.weight: got True"),
    ],
)
def test_a_wrong_split_is_refused_naming_the_field(upstream: str, weight: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        Split(upstream=upstream, weight=weight)


def test_the_config_carries_the_split_and_the_signed_baseline_and_round_trips() -> None:
    guard = Guard.model_validate({"protocol": "v2", "drift": {"threshold": 0.1, "sampleSize": 500}})
    text = guard_config_json(guard, split=Split(upstream=CANARY, weight=20), baseline_json=BASELINE)
    assert json.loads(text)["split"] == {"upstream": CANARY, "weight": 20}
    assert json.loads(text)["baseline"] == json.loads(BASELINE)
    assert text == guard_config_json(guard, split=Split(upstream=CANARY, weight=20), baseline_json=BASELINE)
    config = parse_guard_config(text)
    assert config.guard == guard
    assert config.split == Split(upstream=CANARY, weight=20)
    assert config.baseline is not None
    assert config.baseline.to_json() == BASELINE


def test_without_declared_drift_monitoring_the_baseline_stays_out_of_the_config() -> None:
    text = guard_config_json(Guard.model_validate({"protocol": "v2"}), baseline_json=BASELINE)
    assert "baseline" not in json.loads(text)
    assert parse_guard_config(text).baseline is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"split": {"upstream": CANARY}}, "split: expected an object of upstream and weight"),
        ({"split": {"upstream": CANARY, "weight": 200}}, "split.weight: got 200"),
        ({"baseline": {"rows": 1, "features": []}}, r"baseline\.features: got a list, expected a non-empty list"),
        ({"drift": {"sampleSize": 20_000}}, "sampleSize"),
    ],
)
def test_a_wrong_config_is_refused_naming_the_field(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_guard_config(json.dumps({"protocol": "v2", **extra}))


def test_only_inference_requests_are_split_and_read_for_signals() -> None:
    assert is_inference("POST", "/v2/models/iris/infer")
    assert is_inference("POST", "/v1/chat/completions")
    assert not is_inference("GET", "/v2/health/ready")
    assert not is_inference("POST", "/v2/repository/index")
    assert not is_inference("GET", "/v2/models/iris/infer")


def _policy(**spec: Any) -> GuardPolicy:
    return GuardPolicy.model_validate(spec)


def test_a_policy_requiring_drift_monitoring_denies_a_guard_without_it_or_without_a_signed_baseline() -> None:
    demand = [("prod", _policy(drift={"required": True, "maxThreshold": 0.25}))]
    assert drift_required(demand[0][1])
    assert guard_problems(None, demand) == [
        "spec.guard is missing; a guard in front of the model server is required (ClusterModelPolicy prod)"
    ]
    assert guard_problems(Guard(), demand) == [
        "spec.guard.drift is missing; drift monitoring is required (ClusterModelPolicy prod)"
    ]
    loose = Guard.model_validate({"drift": {"threshold": 0.5}})
    assert guard_problems(loose, demand) == [
        "spec.guard.drift.threshold: found 0.5, expected at most 0.25 (ClusterModelPolicy prod)"
    ]
    fine = Guard.model_validate({"drift": {"threshold": 0.2}})
    assert guard_problems(fine, demand) == []  # the evidence was not looked at
    assert guard_problems(fine, demand, signed_baseline=True) == []
    (unsigned,) = guard_problems(fine, demand, signed_baseline=False)
    assert unsigned.startswith("spec.guard.drift: no verified evaluation attestation of spec.model.digest")


def test_drift_limits_demand_a_lower_threshold_and_a_larger_sample() -> None:
    demand = [("prod", _policy(limits={"drift": {"threshold": 0.1, "sampleSize": 2000}}))]
    assert drift_required(demand[0][1])
    problems = guard_problems(Guard.model_validate({"drift": {"threshold": 0.2, "sampleSize": 1000}}), demand)
    assert problems == [
        "spec.guard.drift.threshold: found 0.2, expected at most 0.1 (ClusterModelPolicy prod)",
        "spec.guard.drift.sampleSize: found 1000, expected at least 2000 (ClusterModelPolicy prod)",
    ]
    assert not drift_required(_policy(required=True))
    assert guard_problems(Guard(), [("team", _policy(required=True))]) == []


def test_the_default_guard_of_a_drift_demanding_policy_monitors_drift_within_its_ceiling() -> None:
    guard = tightest([_policy(drift={"required": True, "maxThreshold": 0.15}), _policy(required=True)])
    assert guard is not None
    assert guard.drift is not None
    assert guard.drift.threshold == 0.15
    both = tightest(
        [_policy(limits={"drift": {"threshold": 0.3, "sampleSize": 3000}}), _policy(drift={"required": True})]
    )
    assert both is not None
    assert both.drift is not None
    assert (both.drift.threshold, both.drift.sample_size) == (0.2, 3000)
