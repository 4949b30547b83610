from __future__ import annotations

import pytest

from devmlops.operator.retries import RetryQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_object_is_due_only_after_the_delay_and_is_taken_once() -> None:
    clock = Clock()
    queue = RetryQueue(5.0, clock)
    queue.add(("team", "a"))
    clock.now += 4.9
    assert not queue.any_due()
    assert queue.take_due() == []
    clock.now += 0.2
    assert queue.any_due()
    assert queue.take_due() == [("team", "a")]
    assert queue.take_due() == []
    assert len(queue) == 0


def test_due_objects_come_oldest_first_and_later_ones_stay() -> None:
    clock = Clock()
    queue = RetryQueue(5.0, clock)
    queue.add(("team", "b"))
    clock.now += 1
    queue.add(("team", "a"))
    clock.now += 3
    queue.add(("team", "c"))
    clock.now += 2.5  # b due at 105, a at 106, c at 109
    assert queue.take_due() == [("team", "b"), ("team", "a")]
    assert len(queue) == 1


def test_adding_an_object_again_keeps_its_earlier_time_and_discard_forgets_it() -> None:
    clock = Clock()
    queue = RetryQueue(5.0, clock)
    queue.add(("team", "a"))
    clock.now += 4
    queue.add(("team", "a"))  # failed again on another path: not pushed back
    clock.now += 1
    assert queue.take_due() == [("team", "a")]
    queue.add(("team", "b"))
    queue.discard(("team", "b"))  # reconciled by its handler meanwhile
    queue.discard(("team", "never-added"))
    clock.now += 10
    assert queue.take_due() == []


def test_a_retry_asked_for_while_a_reconcile_read_is_kept_when_it_finishes() -> None:
    """A reconcile that read its inputs before a change (an approval withdrawn, a child gone) must not discard the
    retry the change asked for: it did not see the change."""
    clock = Clock()
    queue = RetryQueue(5.0, clock)
    queue.add(("team", "a"))  # an earlier failure
    clock.now += 1
    started = queue.mark()
    clock.now += 0.1
    queue.discard(("team", "a"), unless_added_since=started)  # the reconcile covered it
    assert len(queue) == 0
    started = queue.mark()
    clock.now += 0.1
    queue.add(("team", "a"))  # the change, while the reconcile reads
    queue.discard(("team", "a"), unless_added_since=started)
    clock.now += 5
    assert queue.take_due() == [("team", "a")]


def test_the_delay_must_be_positive() -> None:
    with pytest.raises(ValueError, match="delay_seconds"):
        RetryQueue(0)
