"""Whether this operator replica is the one kopf peering lets act.

kopf pauses its handlers while a live peer has a higher priority, but our own re-check loop is not a kopf handler,
so it asks the same question of the peering object before each round: without it every replica would re-decide,
patch and post the same Events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

__all__ = ["leads"]


def leads(peers: Mapping[str, Any], own_priority: int, now: dt.datetime) -> bool:
    """kopf's rule on the peering object's status ({peer id: {priority, lifetime, lastseen}}): this replica acts
    unless a peer that is still alive has a higher priority."""
    for info in peers.values():
        if not isinstance(info, Mapping):
            continue
        try:
            priority = int(info.get("priority", 0))
            lastseen = dt.datetime.fromisoformat(str(info["lastseen"]))
            lifetime = dt.timedelta(seconds=int(info.get("lifetime", 60)))
        except (KeyError, TypeError, ValueError):
            continue
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=dt.UTC)
        if lastseen + lifetime > now and priority > own_priority:
            return False
    return True
