"""ModelDeployments whose reconcile failed, each due for another try at a given time.

kopf retries a failed handler by sleeping in the object's worker. With kopf's workers capped (memory under a burst),
a few dozen failing objects would hold every worker and starve the rest, so a failing reconcile is parked here
instead and the re-check loop retries it outside kopf's workers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Key", "RetryQueue"]

Key = tuple[str, str]  # namespace, name


class RetryQueue:
    """Thread-safe: kopf's handler threads add, the re-check loop takes. One entry per object; adding an object
    that is already waiting keeps the earlier due time."""

    def __init__(self, delay_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if delay_seconds <= 0:
            raise ValueError(f"delay_seconds must be positive, got {delay_seconds}")
        self.delay_seconds = delay_seconds
        self._clock = clock
        self._due: dict[Key, float] = {}
        self._added: dict[Key, float] = {}  # when each was last added
        self._lock = threading.Lock()

    def add(self, key: Key) -> None:
        now = self._clock()
        due = now + self.delay_seconds
        with self._lock:
            self._due[key] = min(due, self._due.get(key, due))
            self._added[key] = now

    def mark(self) -> float:
        """Now, on this queue's clock: pass it to ``discard`` from a reconcile that starts reading now."""
        return self._clock()

    def discard(self, key: Key, *, unless_added_since: float | None = None) -> None:
        """The object reconciled (or went away) by another path: no retry needed. With ``unless_added_since`` (a
        ``mark()`` taken before the reconcile read anything), a retry added since is kept: it answers a change the
        reconcile may not have seen (a child gone, an approval withdrawn while it read)."""
        with self._lock:
            if unless_added_since is not None and self._added.get(key, float("-inf")) >= unless_added_since:
                return
            self._due.pop(key, None)
            self._added.pop(key, None)

    def any_due(self) -> bool:
        now = self._clock()
        with self._lock:
            return any(due <= now for due in self._due.values())

    def take_due(self) -> list[Key]:
        """Remove and return the objects whose time has come, oldest first."""
        now = self._clock()
        with self._lock:
            ready = sorted((due, key) for key, due in self._due.items() if due <= now)
            for _, key in ready:
                del self._due[key]
                self._added.pop(key, None)
        return [key for _, key in ready]

    def __len__(self) -> int:
        with self._lock:
            return len(self._due)
