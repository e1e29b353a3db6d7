"""Why a source cannot admit a new task now, and how long it advises a client to wait.

The reasons: ``no_route`` (no live route to some stage: ``NodeView.no_route``; or every
stage-1 successor takes no task now while none of them is full: each is stopping, refusing
with ``shutdown`` while it drains, or has no route on itself; or ``max_queue_tasks`` are held
while no stage-1 worker is alive) and ``overload`` (every stage-1 successor refused work lately
and one of them is full, or ``max_queue_tasks`` are held while one is alive). A fleet whose
stage-1 workers are all stopping is not overloaded: more capacity would not help, its
operator's stop (or upgrade) is why, and nothing takes tasks until they are back.

The wait (a rejected answer's ``retry_s``): ``overload``, until the first held-off stage-1
successor's hold ends, at least one stage-1 service time (a place frees as a task leaves);
``no_route`` and ``admission``, a heartbeat interval, when the fleet's state is next heard, and
while no stage-1 successor takes tasks at least until the first hold ends (an input sent
before then is rejected again).
"""

from __future__ import annotations

from typing import Any, List, Optional

from agent.policies.api import NodeView

# a successor's refusal reasons that say it takes no task now, not that it is full
NOT_TAKING = ("no_route", "shutdown")


def why_held_off(view: NodeView, refused_why: Any, peer: str) -> str:
    """Why ``peer``, an alive successor, takes no task now: the reason of its last refusal while
    the source holds it off (``Outbox.refused_why``: ``overload``, ``shutdown``, ``no_route``,
    ``link_full``), else ``no_route`` when its heartbeat says it has no route on ("" when it
    takes tasks)."""
    if peer in view.unavailable:
        return refused_why.get(peer, "")
    return "no_route" if view.peer_state.get(peer, {}).get("no_route") else ""


def refusal(view: NodeView, refused_why: Any, held_tasks: int, max_queue_tasks: int) -> str:
    """Why a source with ``view`` (current: ``Outbox.current_view``) cannot admit a new task
    now ("" when it can), ``held_tasks`` of its tasks held for a successor (sent and not ACKed,
    or waiting) against ``max_queue_tasks``."""
    if view.no_route:
        return "no_route"
    held_off = view.alive_successors(1, usable=False)
    if held_off and not view.alive_successors(1):  # every one refused work lately
        full = [p for p in held_off if why_held_off(view, refused_why, p) not in NOT_TAKING]
        return "overload" if full else "no_route"
    if held_tasks >= max_queue_tasks:  # waiting, or sent and not ACKed
        # with no stage-1 worker alive (none heard yet, or all gone before the route
        # verdict) it is no overload of the fleet: nothing takes tasks now
        return "overload" if held_off else "no_route"
    return ""


def first_hold_s(view: NodeView, peers: List[str], now: float) -> float:
    """Seconds from monotonic ``now`` until the first of ``peers`` held off
    (``view.unavailable``) may take work again (0.0 when none is held off)."""
    return min([view.unavailable[p] - now for p in peers if p in view.unavailable], default=0.0)


def retry_s(view: NodeView, reason: str, heartbeat_interval_s: float,
            now: float) -> Optional[float]:
    """How long a client whose input was rejected for ``reason`` at monotonic ``now`` should
    wait before it sends it again (None after ``shutdown``: when the source is back; the module
    docstring says what each reason advises)."""
    if reason == "shutdown":
        return None
    first = view.alive_successors(1, usable=False)
    if reason != "overload":
        usable = view.alive_successors(1, usable=True)
        hold_s = 0.0 if usable else first_hold_s(view, first, now)
        return round(max(heartbeat_interval_s, hold_s), 3)
    served = [float(view.peer_state.get(p, {}).get("service_time_s") or 0) for p in first]
    wait_s = max(first_hold_s(view, first, now), min([t for t in served if t > 0], default=0.0))
    return round(wait_s if wait_s > 0 else heartbeat_interval_s, 3)
