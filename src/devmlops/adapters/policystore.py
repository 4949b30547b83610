"""Compiled policies kept in step with the ClusterModelPolicy watch: one immutable ``PolicySet`` at a time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from devmlops.core.policy import NoMatchAction, Policy, PolicySet, compile_model_policy, compile_policy
from devmlops.errors import InvalidInputError

__all__ = ["PolicyStore"]

_log = logging.getLogger("devmlops.policies")


class PolicyStore:
    def __init__(self, *, no_match: NoMatchAction = "deny", on_change: Callable[[PolicySet], None] = lambda _s: None):
        self._no_match = no_match
        self._on_change = on_change
        self._compiled: dict[str, Policy] = {}
        self._broken: dict[str, str] = {}
        self._snapshot = PolicySet(no_match=no_match)
        self._lock = threading.Lock()

    def snapshot(self) -> PolicySet:
        with self._lock:
            return self._snapshot

    def apply(self, event: str, obj: dict[str, Any]) -> None:
        """Compile an ADDED/MODIFIED policy or drop a DELETED one; a broken policy is kept as broken."""
        metadata = obj.get("metadata") or {}
        team = obj.get("kind") == "ModelPolicy"
        name = f"{metadata.get('namespace')}/{metadata.get('name')}" if team else str(metadata.get("name") or "")
        with self._lock:
            self._compiled.pop(name, None)
            self._broken.pop(name, None)
            if event != "DELETED":
                try:
                    self._compiled[name] = compile_model_policy(obj) if team else compile_policy(obj)
                except InvalidInputError as exc:
                    self._broken[name] = exc.user_message
                    _log.warning("ClusterModelPolicy %s does not compile: %s", name, exc.user_message)
            self._snapshot = PolicySet(
                policies=tuple(self._compiled[n] for n in sorted(self._compiled)),
                broken=dict(self._broken),
                no_match=self._no_match,
            )
            snapshot = self._snapshot
        self._on_change(snapshot)
