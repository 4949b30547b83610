"""Evasion probing: one client sending near-copies of the same input, each nudged a little, to find where the
model's answer flips.

A request's numeric input is quantized (each number to two significant figures) and hashed into a fingerprint; a
request whose fingerprint matches one the same client sent within the window, while its exact bytes differ, is a
probe. A retry (the same bytes) is not. Bounded: at most ``max_clients`` clients (least recently seen dropped first)
and ``max_entries`` fingerprints per client. A heuristic: a perturbation that crosses a rounding boundary gets a
new fingerprint, and a prober that spreads over many client identities is one client per identity (docs/guard.md).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

__all__ = ["FINGERPRINT_VALUES", "ProbeWindow", "exact_hash", "fingerprint"]

FINGERPRINT_VALUES = 4096  # values of a request that make its fingerprint; the rest of a large tensor is left out


def _quantized(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return repr(value)[:64]
    if not math.isfinite(value):
        return repr(float(value))
    return f"{value:.2g}"


def fingerprint(values: Sequence[Any], columns: int) -> bytes:
    """The fingerprint of a tensor's values (row-major, ``columns`` per row): the first 4,096 quantized values and
    the row length, hashed."""
    quantized = ",".join(map(_quantized, values[:FINGERPRINT_VALUES]))
    return hashlib.blake2b(f"{columns}|{len(values)}|{quantized}".encode(), digest_size=16).digest()


def exact_hash(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


class ProbeWindow:
    """Per client, the fingerprints seen in the last ``window_seconds`` with the exact hash of the latest request
    behind each. Not thread-safe: the guard serves from one event loop."""

    __slots__ = ("_clients", "_entries", "_max_clients", "_window")

    def __init__(self, *, window_seconds: float = 300.0, max_clients: int = 10_000, max_entries: int = 256) -> None:
        self._window = window_seconds
        self._max_clients = max_clients
        self._entries = max_entries
        self._clients: OrderedDict[str, OrderedDict[bytes, tuple[bytes, float]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def is_probe(self, client: str, print_: bytes, exact: bytes, now: float) -> bool:
        """Record the request; True when the client sent the same fingerprint with other bytes within the window."""
        seen = self._clients.get(client)
        if seen is None:
            seen = self._clients[client] = OrderedDict()
            while len(self._clients) > self._max_clients:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
        earlier = seen.pop(print_, None)
        seen[print_] = (exact, now)
        while len(seen) > self._entries:
            seen.popitem(last=False)
        if earlier is None:
            return False
        earlier_exact, stamp = earlier
        return earlier_exact != exact and 0.0 <= now - stamp <= self._window
