"""Drift statistics (core/drift.py): PSI and binned KS against hand-computed values, quantile baselines, the sliding
sample's bounds, parsing that names the wrong field, and v2 tensors read into rows."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from devmlops.core.drift import (
    MAX_BINS,
    MAX_FEATURES,
    Baseline,
    BaselineError,
    BaselineFeature,
    DriftSample,
    baseline_from_columns,
    first_tensor_rows,
    ks_binned,
    parse_baseline,
    psi,
)


def test_psi_is_zero_for_the_baseline_shares_and_matches_the_formula_otherwise() -> None:
    assert psi([0.25, 0.25, 0.5], [25, 25, 50]) == pytest.approx(0.0)
    expected = (0.5 - 0.25) * math.log(0.5 / 0.25) + (0.25 - 0.25) * 0 + (0.25 - 0.5) * math.log(0.25 / 0.5)
    assert psi([0.25, 0.25, 0.5], [2, 1, 1]) == pytest.approx(expected)
    assert psi([0.5, 0.5], [0, 0]) == 0.0  # nothing observed yet: no drift claimed


def test_an_empty_bin_counts_as_a_small_share_not_an_infinite_psi() -> None:
    value = psi([0.5, 0.5], [10, 0])
    assert math.isfinite(value)
    assert value > 3  # (1 - 0.5) ln(1 / 0.5) + (1e-4 - 0.5) ln(1e-4 / 0.5)


def test_binned_ks_is_the_largest_gap_of_the_cumulative_shares() -> None:
    assert ks_binned([0.2, 0.3, 0.5], [20, 30, 50]) == pytest.approx(0.0)
    assert ks_binned([0.2, 0.3, 0.5], [0, 0, 10]) == pytest.approx(0.5)  # cumulative 0.5 against 0 after bin 2


def test_a_baseline_has_quantile_cut_points_and_a_tenth_of_the_rows_per_bin() -> None:
    baseline = baseline_from_columns([list(range(100)), [7.0] * 100], ["ramp", "constant"])
    ramp, constant = baseline.features
    assert ramp.edges == pytest.approx([9.9 * k for k in range(1, 10)])
    assert ramp.proportions == pytest.approx([0.1] * 10)
    assert constant.edges == ()  # one value: one bin
    assert constant.proportions == (1.0,)
    assert baseline.rows == 100
    assert parse_baseline(json.loads(baseline.to_json())) == baseline  # canonical JSON round-trips


def test_a_value_on_a_cut_point_goes_to_the_upper_bin() -> None:
    feature = BaselineFeature("x", 0, (1.0, 2.0), (0.3, 0.3, 0.4))
    assert [feature.bin_of(v) for v in (0.5, 1.0, 1.5, 2.0, 9.0)] == [0, 1, 1, 2, 2]


def _valid() -> dict[str, Any]:
    return {"rows": 10, "features": [{"name": "x", "index": 0, "edges": [1.0, 2.0], "proportions": [0.2, 0.3, 0.5]}]}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("rows",), 0, "baseline.rows: got 0, expected a positive integer"),
        (("features",), [], "baseline.features: got a list, expected a non-empty list"),
        (("features", 0, "name"), "", "baseline.features[0].name"),
        (("features", 0, "index"), -1, "baseline.features[0].index: got -1"),
        (("features", 0, "index"), True, "baseline.features[0].index: got True"),
        (("features", 0, "edges"), [2.0, 1.0], "baseline.features[0].edges: expected strictly ascending"),
        (("features", 0, "edges"), [1.0, "2"], "baseline.features[0].edges: got a list, expected a list of finite"),
        (("features", 0, "edges"), [1.0, float("nan")], "baseline.features[0].edges"),
        (("features", 0, "edges"), list(range(MAX_BINS)), f"expected at most {MAX_BINS - 1}"),
        (("features", 0, "proportions"), [0.5, 0.5], "baseline.features[0].proportions: got 2 bins, expected 3"),
        (("features", 0, "proportions"), [0.2, 0.3, 0.4], "baseline.features[0].proportions: they sum to 0.9"),
        (("features", 0, "proportions"), [0.2, -0.3, 1.1], "baseline.features[0].proportions: got a list"),
    ],
)
def test_a_malformed_baseline_is_refused_naming_the_field(path: tuple[Any, ...], value: Any, message: str) -> None:
    raw = _valid()
    target: Any = raw
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(BaselineError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        parse_baseline(raw)


def test_a_baseline_is_bounded_and_its_features_are_distinct() -> None:
    feature = _valid()["features"][0]
    many = {"rows": 1, "features": [{**feature, "name": f"f{i}", "index": i} for i in range(MAX_FEATURES + 1)]}
    with pytest.raises(BaselineError, match=f"expected at most {MAX_FEATURES}"):
        parse_baseline(many)
    with pytest.raises(BaselineError, match="index 0 appears more than once"):
        parse_baseline({"rows": 1, "features": [feature, {**feature, "name": "y"}]})
    with pytest.raises(BaselineError, match="baseline: got a list"):
        parse_baseline([])


def _normal(rng: random.Random, shift: float, rows: int) -> list[float]:
    return [rng.gauss(shift, 1.0) for _ in range(rows)]


def test_a_shifted_sample_crosses_the_threshold_and_an_unshifted_one_does_not() -> None:
    rng = random.Random(7)  # noqa: S311 - reproducible test data
    baseline = baseline_from_columns([_normal(rng, 0, 5000), _normal(rng, 0, 5000)], ["a", "b"])
    same, shifted = DriftSample(baseline, 1000), DriftSample(baseline, 1000)
    same.add([v for pair in zip(_normal(rng, 0, 1000), _normal(rng, 0, 1000), strict=True) for v in pair], 2)
    shifted.add([v for pair in zip(_normal(rng, 0.5, 1000), _normal(rng, 0, 1000), strict=True) for v in pair], 2)
    (_, psi_a, _), (_, psi_b, _) = same.statistics()
    assert psi_a < 0.05
    assert psi_b < 0.05
    (_, shifted_a, ks_a), (_, shifted_b, _) = shifted.statistics()
    assert shifted_a > 0.2  # half a standard deviation: PSI about 0.25
    assert ks_a > 0.15
    assert shifted_b < 0.05  # the feature that did not move


def test_the_sample_slides_and_stays_bounded() -> None:
    baseline = Baseline((BaselineFeature("x", 1, (0.0,), (0.5, 0.5)),), rows=2)
    sample = DriftSample(baseline, 10)
    assert sample.add([9, -1.0] * 25, 2) == 10  # only the last 10 of 25 rows of a request are read
    assert len(sample) == 10
    assert sample.statistics()[0][1] > 3  # everything in the lower bin
    sample.add([9, 1.0] * 10, 2)
    assert len(sample) == 10
    assert sample.statistics()[0][1] > 3  # the older rows left: everything in the upper bin now
    sample.add([9, 1.0] * 5 + [9, -1.0] * 5, 2)
    assert sample.statistics()[0][1] == pytest.approx(0.0)  # half and half, as the baseline


def test_rows_lacking_a_feature_or_holding_something_else_are_left_out() -> None:
    baseline = Baseline((BaselineFeature("x", 2, (0.0,), (0.5, 0.5)),), rows=2)
    sample = DriftSample(baseline, 10)
    assert sample.add([1.0, 2.0], 2) == 0  # two columns: feature 2 is not there
    assert sample.add([1.0, 2.0, "x", 1.0, 2.0, None, 1.0, 2.0, float("nan"), 1.0, 2.0, 3.0], 3) == 1
    assert len(sample) == 1


def test_the_first_v2_tensor_is_read_as_rows_of_its_shape() -> None:
    nested = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]}]}
    assert first_tensor_rows(nested, max_values=100) == ([1, 2, 3, 4, 5, 6], 3)
    flat = {"inputs": [{"name": "x", "shape": [3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}]}
    assert first_tensor_rows(flat, max_values=100) == ([1.0, 2.0, 3.0], 3)  # one row
    assert first_tensor_rows(nested, max_values=5) == ([], 0)  # over the bound: not read
    for body in (
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3]}]},  # disagrees with shape
        {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]},
        {"inputs": []},
        [],
    ):
        assert first_tensor_rows(body, max_values=100) == ([], 0)
