"""A worker's answers and escalations: the RESULT of a task answered here, and the ESCALATE of
a tier (DIMEE, MLCI) with its take-back.

An escalation goes to the outbox like a forwarded task and stays in its custody until a higher
tier ACKs it. Each escalation's ``OutItem.takeback`` asks the policy for the
answer at this tier of what it escalated (``AgentPolicy.answer_kept``: MLCI's, whose ESCALATE
carries the class and confidence the level would have answered; None from the others): when the outbox finds no alive successor for it any more
(the higher tier SIGKILLed with the task sent and not ACKed, on its link, or held), it answers
the task here with that answer instead of holding it until its source re-issues it (counted:
``taken_back``). A task is answered once: its custody here ended with the take-back, so a late
ACK of the escalation is ignored, and a source takes one RESULT per task (a second is counted
``duplicate_result`` there).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Dict, Optional

from agent.node.outitem import OutItem
from agent.policies.api import HeadAction
from agent.protocol import wire
from agent.protocol.wire import Kind

_RESULT = Kind.RESULT  # per answer: a module constant, not an enum member's lookup (~0.07 us)


def result_item(side: Any, f: Dict[str, Any], h: int, cls: int, confidence: float,
                action: Optional[HeadAction], expires: float) -> Optional[OutItem]:
    """The RESULT of task ``f`` answered here after stage ``h`` with the head's ``cls`` and
    ``confidence`` (the policy's ``action``, when it gave one, adds its fields and may replace
    both), counted as exited; None when the policy's confidence is not finite (rejected: it
    would fail the RESULTS batch)."""
    out = side.out
    out.count("finished" if h == out.view.num_stages else "exited")
    side.metrics.task_exited(h)
    fields = {"id": f["id"], "attempt": f["attempt"], "source": f["source"], "exit_stage": h,
              "cls": int(cls), "confidence": float(confidence), "worker": side.cfg.node_id,
              "hops": f["hops"] + 1, "resends": f["resends"], "created": f["created"],
              "token": f.get("token", "")}
    if action is not None:  # the policy's answer (an ensemble's class) and fields
        fields.update(action.fields)
        if action.cls is not None:
            fields["cls"], fields["confidence"] = int(action.cls), float(action.confidence)
            if not math.isfinite(fields["confidence"]):
                out.reject("bad_output", f["source"], "the policy's confidence for task %s is %r"
                           % (f["id"], fields["confidence"]))
                return None
    # positional, keep_until set after: keywords cost a dataclass's __init__ 0.15 us more
    item = OutItem(_RESULT, "R:" + wire.task_key(f["id"], f["attempt"]), fields, None, f["source"])
    item.keep_until = expires
    return item


def escalate(side: Any, f: Dict[str, Any], x0: Any, expires: float, action: HeadAction,
             cls: int, confidence: float) -> None:
    """ESCALATE: the task's raw input ``x0`` as a stage-1 TASK with the action's fields, its
    token and what is left of its deadline, to the successor the policy picks (the outbox
    asks); with a take-back when the policy has one (module docstring). ``cls`` and
    ``confidence``: the stage's head, for the take-back's RESULT."""
    out = side.out
    now = side.clock()
    if x0 is None:  # it did not start here at stage 1: no raw input to send
        return out.drop("no_input")
    if expires and now >= expires:
        return out.drop("deadline")
    nf = dict(f, stage=1, hops=f["hops"] + 1)
    nf.update(action.fields)
    out.count("escalated")
    side.metrics.task_out(f["stage"])
    item = OutItem(Kind.TASK, wire.task_key(f["id"], f["attempt"]), nf, x0, expires=expires)
    item.takeback = functools.partial(_take_back, side, f, cls, confidence, action, expires)
    out.send(item, now)


def _take_back(side: Any, f: Dict[str, Any], cls: int, confidence: float, action: HeadAction,
               expires: float, now: float) -> bool:
    """Answer here the escalation of task ``f`` no higher tier can take any more: the
    policy's answer for it at this tier (``AgentPolicy.answer_kept``), as a RESULT to its
    source. False when the policy gives none (the escalation waits, as before)."""
    kept = side.policy.answer_kept(action)
    if kept is None:
        return False
    item = result_item(side, f, f["stage"], cls, confidence, kept, expires)
    if item is not None:
        side.out.send(item, now)
    return True
