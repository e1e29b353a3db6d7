"""Successors the outbox leaves alone for a while: the bounds of a hold, and the hold of a
successor whose link is full.

A successor more than the larger of ``LINK_QUEUE_MAX_S`` and its largest task's link time behind
(tasks not ACKed, at the lower of its configured and measured rate: ``linkclock.links_behind``)
is left alone like a refusing one until that drains (``link_full``), so the queue its heartbeats
wait in stays short and a source rejects the excess (``overload``).
"""

from __future__ import annotations

from typing import Any

from agent.net.liveness import LINK_QUEUE_MAX_S  # link time queued to a successor at most
from agent.node.linkclock import links_behind

HOLD_MIN_S, HOLD_MAX_S = 0.005, 1.0  # bounds on how long a refusing successor is left alone


def hold_full_links(out: Any, now: float) -> None:
    """Hold off each successor of outbox ``out`` behind by over ``LINK_QUEUE_MAX_S`` (or one
    task's) link time; a timer offers the held tasks again when its hold ends."""
    rates = (out.link_rates.prior, out.view.link_rate_bytes_s)
    if out.items.fits(rates, LINK_QUEUE_MAX_S):
        return  # the common case, without a scan of every item
    for peer, over_s in links_behind(out.items.values(), rates, LINK_QUEUE_MAX_S).items():
        hold = min(max(over_s, HOLD_MIN_S), HOLD_MAX_S)
        if out.view.unavailable.get(peer, 0.0) < now + hold:
            out.view.unavailable[peer] = now + hold
            out.refused_why[peer] = "link_full"
            out._timers.push(now + hold, "", False)  # offer held tasks again when it has drained
            out.counters["link_full"] += 1
