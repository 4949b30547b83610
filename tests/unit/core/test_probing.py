"""Evasion probing (core/probing.py): one client's nudged copies of an input count, distinct inputs and retries do
not, the window forgets, and the memory is bounded in clients and entries."""

from __future__ import annotations

import random

from devmlops.core.probing import Fingerprint, ProbeWindow, exact_hash, fingerprint

ROW = [17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871]


def _request(values: list[float]) -> tuple[Fingerprint, bytes]:
    return fingerprint(values, len(values)), exact_hash(repr(values).encode())


def test_nudged_copies_from_one_client_are_probes() -> None:
    window = ProbeWindow()
    rng = random.Random(3)  # noqa: S311 - reproducible test data
    flags = []
    for step in range(20):
        nudged = [v * (1 + rng.uniform(-0.002, 0.002)) for v in ROW] if step else ROW
        print_, exact = _request(nudged)
        flags.append(window.is_probe("mallory", print_, exact, float(step)))
    assert not flags[0]
    assert all(flags[1:])


def test_distinct_inputs_retries_and_other_clients_are_not_probes() -> None:
    window = ProbeWindow()
    rng = random.Random(5)  # noqa: S311 - reproducible test data
    for step in range(20):
        distinct = [v * rng.uniform(0.5, 1.5) for v in ROW]  # another sample, not a nudge
        print_, exact = _request(distinct)
        assert not window.is_probe("alice", print_, exact, float(step))
    print_, exact = _request(ROW)
    assert not window.is_probe("bob", print_, exact, 0.0)
    assert not window.is_probe("bob", print_, exact, 1.0)  # the same bytes: a retry
    nudged, other = _request([v * 1.001 for v in ROW])
    assert not window.is_probe("carol", nudged, other, 2.0)  # bob's input, not carol's


def test_the_window_forgets_and_the_memory_is_bounded() -> None:
    window = ProbeWindow(window_seconds=10, max_clients=2, max_entries=2)
    first, exact = _request(ROW)
    assert not window.is_probe("a", first, exact, 0.0)
    nudged, other = _request([v * 1.001 for v in ROW])
    assert not window.is_probe("a", nudged, other, 11.0)  # older than the window
    for index in range(5):
        print_, exact = _request([float(index + 10 * k) for k in range(10)])
        window.is_probe(f"client-{index}", print_, exact, 12.0)
    assert len(window) == 2
    for index in range(3):  # three other inputs push the first out of a two-entry memory
        print_, exact = _request([float(index * 1000 + k) for k in range(10)])
        window.is_probe("b", print_, exact, 13.0)
    print_, exact = _request([float(k) * 1.001 for k in range(10)])
    assert not window.is_probe("b", print_, exact, 14.0)


def test_only_inputs_of_the_same_shape_are_compared() -> None:
    window = ProbeWindow()
    print_, exact = _request(ROW)
    window.is_probe("a", print_, exact, 0.0)
    longer, other = _request([*ROW, 1.0])
    assert not window.is_probe("a", longer, other, 1.0)
