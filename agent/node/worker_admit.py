"""Whether a worker takes a well-formed TASK now, or refuses it in its ACK (and for how long its
sender should leave the worker alone).

The refusals, in order: ``shutdown`` (the worker is stopping: ``worker_drain``); ``no_route``
(no live route to a later stage, or back to the task's source: ``outitem.cut_off_from``);
``overload`` (the node already holds ``max_queue_tasks`` tasks or ``max_queue_bytes`` of
tensors, input and output queues together, or the tasks waiting for or in its engine times its
service time exceed what is left of the task's deadline, so it would expire before it ran, or
every successor of its next stage refuses work while tasks already wait here for one, one of
them being full; ``no_route`` when each of them is stopping or has no route on:
``source_refusal.why_held_off``).

A refusal for a reason about the task's source alone names that source (``refusal_scope``;
a worker of one source names it for a ``no_route`` only): no route back to it, or every
successor of the next stage held off for its tasks alone while another source's still go
there. Its sender then holds this worker off for that source's tasks
only. A task straight from its source ends this worker's own holds about that source made while
it was gone (``SourceHolds.back``): it is back.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

from agent.node.outitem import cut_off_from
from agent.node.refusal_scope import scope_of
from agent.node.source_refusal import NOT_TAKING, why_held_off

Refusal = Union[Tuple[str, float], Tuple[str, float, str]]  # (reason, retry_s[, source])


def refusal(w: Any, f: Dict[str, Any], nbytes: int, sender: str, ttl: float,
            now: float) -> Optional[Refusal]:
    """(reason, retry_s) when worker ``w`` (a ``worker.WorkerSide``) refuses the TASK with
    fields ``f`` and ``nbytes`` of tensor from ``sender``, ``ttl`` seconds before its deadline,
    at monotonic ``now``, with the source it is about alone when it is (module docstring);
    None when it takes it."""
    if w.drain.stopping:
        return "shutdown", w.drain.retry_s(now)
    view = w.out.view
    # no route onward, or none back (``outitem.cut_off_from``): the sender routes around
    if view.no_route:
        return "no_route", w.cfg.heartbeat_interval_s
    # cut_off_from's first test, read here: a source alive (each task, mostly) costs no call
    if f["source"] not in view.alive and cut_off_from(f["source"], sender, view, w.out, w.sources):
        return "no_route", w.cfg.heartbeat_interval_s, scope_of(f["source"], w.sources,
                                                                "no_route")
    tasks, held_bytes = w.held()
    ahead = w.input_queue()  # it would wait behind these: refused when it would expire
    if tasks >= w.cfg.max_queue_tasks or held_bytes + nbytes > w.cfg.max_queue_bytes or (
            ahead and ahead * view.service_time_s > ttl):  # NaN or 0 s: never refused so
        # come back in about one service time: a place frees when a task leaves
        return "overload", view.service_time_s
    h, src = f["stage"], f["source"]
    if sender == src and w.out.source_holds:  # it is back: its tasks go on (refusal_scope)
        w.out.source_holds.back(src)
    if w.out.waiting and not w.cfg.terminal and h < view.num_stages \
            and not view.serves(h + 1) and view.alive_successors(h + 1, usable=False):
        takers = w.out.current_view().alive_successors(h + 1)
        held = w.out.source_holds.held_for(src, now)  # held off for this source's tasks alone
        if any(p not in held for p in takers):
            return None
        # every stage-(h+1) successor refuses work (this source's, or every source's) and
        # tasks already wait here for one (none heard yet, or all gone, is no refusal: the
        # task waits, or no_route says so): this one would queue behind them, so the pressure
        # goes upstream to the source (which then rejects) instead; come back when the first
        # successor's hold ends. Successors that are all stopping (shutdown) or have no route
        # on are no overload: nothing takes the task onward now, however little is sent
        # (no_route). Refused for this source's tasks alone, this refusal is about them alone
        hold_s = min(list(view.unavailable.values()) + list(held.values()), default=now) - now
        nxt = view.alive_successors(h + 1, usable=False)
        if all((why_held_off(view, w.out.refused_why, p) or w.out.source_holds.why(p, src))
               in NOT_TAKING for p in nxt):
            return "no_route", max(hold_s, w.cfg.heartbeat_interval_s), (
                scope_of(src, w.sources, "no_route") if takers else "")
        return "overload", max(hold_s, view.service_time_s), (
            scope_of(src, w.sources) if takers else "")
    return None
