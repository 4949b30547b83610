"""The re-check loop runs only in the replica kopf peering lets act: no live peer with a higher priority."""

from __future__ import annotations

import datetime as dt

from devmlops.operator.leadership import leads

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def peer(priority: int, seconds_ago: float, lifetime: int = 60) -> dict[str, object]:
    return {
        "priority": priority,
        "lifetime": lifetime,
        "lastseen": (NOW - dt.timedelta(seconds=seconds_ago)).isoformat(),
    }


def test_a_live_peer_with_a_higher_priority_makes_this_replica_stand_by() -> None:
    assert not leads({"me": peer(10, 1), "other": peer(20, 5)}, 10, NOW)
    assert leads({"me": peer(20, 1), "other": peer(10, 5)}, 20, NOW)


def test_a_dead_peer_does_not_count_nor_does_garbage() -> None:
    assert leads({"me": peer(10, 1), "gone": peer(99, 61)}, 10, NOW)
    assert leads({"me": peer(10, 1), "odd": "not an object", "bad": {"priority": "x", "lastseen": "?"}}, 10, NOW)


def test_alone_or_with_an_empty_status_this_replica_leads() -> None:
    assert leads({}, 0, NOW)
