"""Escalations the outbox gives back to the worker that made them.

A tier's escalation (``worker_tier``) carries a take-back (``OutItem.takeback``). When no
successor of its stage is alive any more, alive at all, not merely refusing or with a full
link (the higher tier's process died with the task sent and not ACKed, on its emulated link, or
held), the outbox ends its custody and hands the task back: the worker answers it at its own
tier at once, as it answers a new escalation with no higher tier alive, instead of holding it
until its deadline and its source's re-issue. The outbox finds such a task when it routes it
(a resend after its ACK deadline or its data connection's drop, a refusal) and when it offers
its held tasks again (every heartbeat interval, and when a neighbour comes back).
"""

from __future__ import annotations

from typing import Any

from agent.node import outqueue
from agent.node.outitem import OutItem


def _stranded(view: Any, item: OutItem) -> bool:
    """True when ``item`` has a take-back and no successor of its stage is alive."""
    return item.takeback is not None and not view.alive_successors(item.fields["stage"],
                                                                     usable=False)


def answer_stranded(out: Any, item: OutItem, now: float) -> bool:
    """Hand task ``item`` (out of custody: routed now and given no successor) back to the
    worker when it is stranded (module docstring); True when the worker answered it, counted
    ``taken_back`` (False: it is to be held, as without a take-back)."""
    if not _stranded(out.view, item):
        return False
    answer, item.takeback = item.takeback, None  # asked once: a second call finds none
    if not answer(now):  # the policy answers nothing at this tier: held as before
        return False
    out.count("taken_back")
    return True


def answer_stranded_held(out: Any, now: float) -> None:
    """Hand every stranded held task (``out.waiting``) back to its worker, oldest first."""
    gone = [i for i in out.waiting if _stranded(out.view, i)]
    if gone:
        ids = {id(i) for i in gone}
        out.waiting[:] = [i for i in out.waiting if id(i) not in ids]
        for item in gone:
            if not answer_stranded(out, item, now):  # not answered here: back at its place by age
                outqueue.hold(out.waiting, item)
