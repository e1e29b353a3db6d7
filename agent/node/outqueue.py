"""The output queue of a node: tasks held for a successor, how many wait to leave (O_n), and
how held tasks are offered again.

A task the policy does not route (no usable successor; MDI-Exit's Alg. 2 keeps it) waits in the
outbox's ``waiting`` list, oldest first by the order tasks were made (``OutItem.seq``), however
late one comes back (refused by a successor, or routed again after a lost ACK or link: ``hold``
puts it at its place). ``reoffer`` offers them again, oldest first (the node calls it on every
policy tick and heartbeat, when a refusing successor's hold ends and when a neighbour comes
back). A task stays in ``waiting`` until its own offer, so the policy's view
counts the whole output queue: the task offered, the held tasks behind it and the tasks still
waiting for their link (``output_tasks``). One the policy keeps again goes back to its place.

A policy with ``held_in_order`` true (MDI-Exit: Alg. 1 puts a task at the tail of the output
queue and Alg. 2 offers its head only) gets each stage's held tasks offered until the first it
keeps, which stays the head with the rest behind it, and a new task of a stage with tasks held
joins them at the tail (``behind``), the head being offered at once; the simulator does
the same (it offers the head of each node's output queue and stops at the first refusal). A task
kept because every usable successor of its stage is held off for its source's tasks alone
(``refusal_scope.kept_for_source``: a successor with no route back to that source) stops the
offers of that source's tasks of the stage only: another source's tasks behind it may go to
those successors, and one source cut off would otherwise stall every source's. Other
policies get every held task offered and route a new task at once: most keep a task only while
no successor of its stage is usable, which every later task of that stage finds too, but
DIMEE's sources route each task by its own tier, and one tier's held task must not hold back
another's.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional, Set

from agent.node.outitem import OutItem
from agent.node.refusal_scope import kept_for_source
from agent.protocol.wire import Kind


PACED_RECOUNT_S = 0.1  # a policy that does not decide by O_n task by task: recount this often


class OutputCount:
    """O_n (``output_tasks``) with its scan of the emulated links' queues bounded: exact on
    every call for a policy that decides by O_n task by task (``in_order``: MDI-Exit), else the
    links' part counted again at most every ``PACED_RECOUNT_S`` (only status, heartbeats and
    metrics read it then). A scan of 80 queued tasks takes about 12 us, and the view is taken
    two or three times per task."""

    def __init__(self) -> None:
        self._paced_n = 0
        self._at = -float("inf")

    def __call__(self, policy: Any, waiting: List[OutItem], paced: List[Any],
                 items: Mapping[str, OutItem], now: float) -> int:
        if not paced:
            return len(waiting)
        if in_order(policy) or now >= self._at + PACED_RECOUNT_S:
            self._paced_n, self._at = output_tasks([], paced, items, now), now
        return len(waiting) + self._paced_n


def output_tasks(waiting: List[OutItem], paced: List[Any], items: Mapping[str, OutItem],
                 now: float) -> int:
    """O_n, the tasks waiting to leave this node: those held (``waiting``) and those sent on an
    emulated link that has not started carrying them yet (``paced``, the outbox's heap of
    ``(due, seq, item, frames)``: queued behind earlier tasks). From the moment a link starts
    carrying a task to its ACK the task is in transfer (the measured D_nm), no longer in O_n;
    results, which go to their source, never count."""
    on_hold = {id(it) for _, _, it, _ in paced
               if it.kind is Kind.TASK and it.link_start > now and items.get(it.key) is it}
    return len(waiting) + len(on_hold)


def in_order(policy: Any) -> bool:
    """Whether ``policy`` has its held tasks offered head first (module docstring)."""
    return bool(getattr(policy, "held_in_order", False))


def behind(waiting: List[OutItem], item: OutItem, policy: Any) -> bool:
    """True when new task ``item`` is to join ``waiting`` at the tail: ``policy`` offers held
    tasks head first and a task of ``item``'s stage is held."""
    stage = item.fields["stage"]
    return in_order(policy) and any(i.fields["stage"] == stage for i in waiting)


def hold(waiting: List[OutItem], item: OutItem) -> None:
    """Put ``item`` among the held tasks of ``waiting`` (oldest first) at its place by age: at
    the tail when it is the newest (a task just made: no search), else after the last older
    one (a task refused or sent again, made before some already held)."""
    if not waiting or waiting[-1].seq < item.seq:
        return waiting.append(item)
    lo, hi, seq = 0, len(waiting), item.seq
    while lo < hi:  # bisect by seq (Python 3.8's bisect takes no key)
        mid = (lo + hi) // 2
        if waiting[mid].seq < seq:
            lo = mid + 1
        else:
            hi = mid
    waiting.insert(lo, item)


def reoffer(waiting: List[OutItem], send: Callable[[OutItem, float, bool], None], now: float,
            head_first: bool, scoped: Optional[Callable[[OutItem], bool]] = None) -> None:
    """Offer the held tasks of ``waiting`` to ``send`` (``Outbox.send`` of a task offered
    again, which ``hold``s one kept again: at its place, where it was) oldest first; with
    ``head_first`` (``in_order``), a stage's offers end at the first task kept, or only its
    source's when ``scoped`` says that task was kept for its source alone (module docstring)."""
    blocked: Set[Any] = set()  # stages, or (stage, source), whose oldest held task was kept now
    i = 0
    while i < len(waiting):
        item = waiting[i]
        stage = item.fields["stage"]
        if blocked and (stage in blocked or (stage, item.fields.get("source")) in blocked):
            i += 1
            continue
        del waiting[i]
        before = len(waiting)
        send(item, now, True)
        if len(waiting) > before:  # kept again: back at its place, i (all before it are older)
            i += 1
            if head_first:
                # Kept only because every usable successor refuses its source's tasks (no
                # route back to that source, or none onward for it), the head cannot leave
                # before those holds end and no task of that source may pass it, but another
                # source's tasks would be sent now: they are offered, oldest first. A task
                # kept with a successor still open to its source (Alg. 2 said no), or with
                # none usable at all, stops the whole stage, as the paper's head does.
                scope = item.fields.get("source") if scoped is not None and scoped(item) else None
                blocked.add(stage if scope is None else (stage, scope))


def reoffer_held(out: Any, now: float) -> None:
    """``reoffer`` the held tasks of outbox ``out`` at monotonic ``now``, head first when its
    policy asks (``in_order``), a keep for one source alone (``kept_for_source``) holding
    back that source's tasks only."""
    holds = out.source_holds
    reoffer(out.waiting, out.send, now, in_order(out.policy),
            lambda it: kept_for_source(holds, out.view, it.fields["source"],
                                       it.fields["stage"], now))


def take_back(waiting: List[OutItem], wanted: Callable[[OutItem], bool]) -> Optional[OutItem]:
    """Remove and return the oldest task of ``waiting`` that ``wanted`` accepts (None: none)."""
    for i, item in enumerate(waiting):
        if wanted(item):
            return waiting.pop(i)
    return None


def expire(waiting: List[OutItem], now: float) -> int:
    """Remove the tasks past their deadline from ``waiting`` (in place); how many went."""
    keep = [i for i in waiting if not i.expires or i.expires > now]
    gone = len(waiting) - len(keep)
    if gone:
        waiting[:] = keep
    return gone
