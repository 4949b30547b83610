"""One reconcile of a ModelDeployment at a time, and never one from an older read than the newest reconciled.

kopf's handlers (on its threads) and the background loop (retries and re-check rounds, on another) reconcile the
same objects. The loop works from lists and reads that a handler may have overtaken with a newer spec; written
late, its children and status would undo the handler's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from devmlops.operator.retries import Key

__all__ = ["ReconcileGuard"]


class _Entry:
    __slots__ = ("lock", "newest")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.newest = 0


class ReconcileGuard:
    def __init__(self) -> None:
        self._entries: dict[Key, _Entry] = {}
        self._lock = threading.Lock()

    def _entry(self, key: Key) -> _Entry:
        with self._lock:
            return self._entries.setdefault(key, _Entry())

    @contextmanager
    def turn(self, key: Key, generation: int) -> Iterator[bool]:
        """Hold the object's lock; the value says whether ``generation`` is still current (False: a newer one was
        reconciled already, skip this read)."""
        entry = self._entry(key)
        with entry.lock:
            yield generation >= entry.newest

    @contextmanager
    def exclusive(self, key: Key) -> Iterator[None]:
        """Hold the object's lock for a write that reads the object afresh inside it (a child's report)."""
        with self._entry(key).lock:
            yield

    def reconciled(self, key: Key, generation: int) -> None:
        """Call while holding the turn."""
        entry = self._entry(key)
        entry.newest = max(generation, entry.newest)

    def forget(self, key: Key) -> None:
        """The object is gone."""
        with self._lock:
            self._entries.pop(key, None)
