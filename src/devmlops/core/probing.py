"""Evasion probing: one client sending near-copies of the same input, each nudged a little, to find where the
model's answer flips.

A request's fingerprint is its first 64 numbers quantized to two significant figures, each kept as one byte of its
hash (the tensor's size and row length beside). A request is a probe when the same client sent, within the window,
a request of the same shape whose fingerprint agrees in at least 75% of the positions while its exact bytes differ:
small nudges move a few numbers across a rounding step, never most of them; distinct inputs agree in few. A retry
(the same bytes) is not a probe. Bounded: at most ``max_clients`` clients (least recently seen dropped first) and
the last ``max_entries`` requests per client (about 250 bytes each), so a request costs at most ``max_entries``
comparisons of 64 bytes. A heuristic: a prober that spreads over many client identities is one client per identity,
and nudges of more than a few percent are distinct inputs (docs/guard.md).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["FINGERPRINT_VALUES", "SIMILARITY", "Fingerprint", "ProbeWindow", "exact_hash", "fingerprint"]

FINGERPRINT_VALUES = 64  # numbers of a request that make its fingerprint
SIMILARITY = 0.75  # the share of equal quantized positions that makes two requests near-copies


@dataclass(frozen=True, slots=True)
class Fingerprint:
    shape: tuple[int, int]  # (values, columns): only requests of the same shape are compared
    quantized: bytes  # one byte per quantized value: a hash of it (equal values, equal bytes; others 1 in 256)


def _quantized(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return repr(value)[:64]
    if not math.isfinite(value):
        return repr(float(value))
    return f"{value:.2g}"


def fingerprint(values: Sequence[Any], columns: int) -> Fingerprint:
    """The fingerprint of a tensor's values (row-major, ``columns`` per row)."""
    return Fingerprint(
        (len(values), columns), bytes([hash(q) & 0xFF for q in map(_quantized, values[:FINGERPRINT_VALUES])])
    )


def exact_hash(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


def near(a: Fingerprint, b: Fingerprint) -> bool:
    """Whether two fingerprints are of near-copies: the same shape, at least ``SIMILARITY`` of positions equal."""
    size = len(a.quantized)
    if a.shape != b.shape or not size:
        return False
    # Equal positions are the zero bytes of the XOR: two C-level passes, no Python loop over the values.
    xor = int.from_bytes(a.quantized, "big") ^ int.from_bytes(b.quantized, "big")
    return xor.to_bytes(size, "big").count(0) >= SIMILARITY * size


class ProbeWindow:
    """Per client, the last requests' fingerprints with their exact hashes and times. Not thread-safe: the guard
    serves from one event loop."""

    __slots__ = ("_clients", "_entries", "_max_clients", "_window")

    def __init__(self, *, window_seconds: float = 300.0, max_clients: int = 4096, max_entries: int = 16) -> None:
        self._window = window_seconds
        self._max_clients = max_clients
        self._entries = max_entries
        self._clients: OrderedDict[str, deque[tuple[Fingerprint, bytes, float]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def is_probe(self, client: str, print_: Fingerprint, exact: bytes, now: float) -> bool:
        """Record the request; True when the client sent a near-copy with other bytes within the window."""
        recent = self._clients.get(client)
        if recent is None:
            recent = self._clients[client] = deque(maxlen=self._entries)
            while len(self._clients) > self._max_clients:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
        probe = any(
            other != exact and 0.0 <= now - stamp <= self._window and near(print_, earlier)
            for earlier, other, stamp in recent
        )
        recent.append((print_, exact, now))
        return probe
