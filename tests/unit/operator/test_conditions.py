from __future__ import annotations

from devmlops.operator.conditions import set_condition


def test_a_new_condition_is_appended_with_its_transition_time() -> None:
    (condition,) = set_condition([], type_="Admitted", status="True", reason="R", message="m", generation=3, now="t1")
    assert condition == {
        "type": "Admitted",
        "status": "True",
        "reason": "R",
        "message": "m",
        "observedGeneration": 3,
        "lastTransitionTime": "t1",
    }


def test_the_transition_time_moves_only_when_the_status_changes() -> None:
    first = set_condition([], type_="Ready", status="False", reason="A", message="", generation=1, now="t1")
    same = set_condition(first, type_="Ready", status="False", reason="B", message="", generation=2, now="t2")
    flipped = set_condition(same, type_="Ready", status="True", reason="C", message="", generation=2, now="t3")
    assert same[0]["lastTransitionTime"] == "t1"
    assert same[0]["reason"] == "B"
    assert flipped[0]["lastTransitionTime"] == "t3"


def test_other_conditions_are_kept() -> None:
    first = set_condition([], type_="A", status="True", reason="r", message="", generation=1, now="t")
    both = set_condition(first, type_="B", status="False", reason="r", message="", generation=1, now="t")
    assert [c["type"] for c in both] == ["A", "B"]
