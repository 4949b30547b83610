from __future__ import annotations

import threading

from devmlops.operator.guard import ReconcileGuard

KEY = ("team", "fraud")


def test_a_read_older_than_the_newest_reconciled_generation_is_not_current() -> None:
    guard = ReconcileGuard()
    with guard.turn(KEY, 1) as current:
        assert current
    guard.reconciled(KEY, 3)
    with guard.turn(KEY, 2) as current:
        assert not current  # a handler reconciled generation 3 after this read was made
    with guard.turn(KEY, 3) as current:
        assert current  # the same generation again: a re-check
    guard.reconciled(KEY, 2)  # never moves back
    with guard.turn(KEY, 2) as current:
        assert not current
    guard.forget(KEY)
    with guard.turn(KEY, 1) as current:
        assert current


def test_one_reconcile_of_an_object_at_a_time() -> None:
    guard = ReconcileGuard()
    inside, release, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with guard.turn(KEY, 1):
            inside.set()
            release.wait(5)

    def second() -> None:
        with guard.turn(KEY, 1):
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert inside.wait(5)
    threads[1].start()
    assert not second_in.wait(0.3)  # held while the first one reconciles
    with guard.turn(("team", "other"), 1) as current:  # another object is not held up
        assert current
    release.set()
    assert second_in.wait(5)
    for thread in threads:
        thread.join(5)
