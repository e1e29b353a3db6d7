"""Refusals about one source's tasks: a successor that takes other sources' tasks, but not one
source's, is held off for that source's tasks alone.

A worker with no route back to a task's source (``outitem.cut_off_from``), or whose every
next-stage successor is held off for that source's tasks alone (``worker_admit``), refuses the
task naming the source in its ACK (``source``: ``agent.protocol.ack``). Held off for every
task instead, a worker cut off from one source made its sender hold every source's tasks, and
the sender's own sender then had them rejected (``no_route``) for want of a next stage.

The sender keeps such a hold per successor and source (``SourceHolds``) beside the holds of
every task (``NodeView.unavailable``): routing a task of that source leaves the successor out
(``choose_successor``); other sources' tasks still go to it. A worker of one source names none
(every task it is sent is that source's; an older sender, which ignores the field, then holds
the same off as before), and a source takes a refusal naming itself as one of every task (its
tasks are all its own: ``Outbox.on_ack``).

A task of a source whose every usable successor is held off for that source's tasks alone is
kept for that source alone (``kept_for_source``): where held tasks are offered head first
(``agent.node.outqueue``), it holds back that source's later tasks of its stage, not others'.
"""

from __future__ import annotations

from typing import Any, Collection, Dict, Sequence, Tuple


def scope_of(source: str, sources: Collection[str]) -> str:
    """The source a worker of ``sources`` names when it refuses a task of ``source`` for a
    reason about that source alone ("" when it has one source: every task it gets is its)."""
    return source if len(sources) > 1 else ""


class SourceHolds:
    """Successors held off for one source's tasks: (peer, source) -> (monotonic time the hold
    ends, reason of the refusal)."""

    def __init__(self) -> None:
        self._holds: Dict[Tuple[str, str], Tuple[float, str]] = {}

    def __bool__(self) -> bool:
        return bool(self._holds)

    def hold(self, peer: str, source: str, until: float, reason: str) -> None:
        """Leave ``peer`` alone for ``source``'s tasks until monotonic ``until`` (a later hold
        already kept stays), ``reason`` being why it refused."""
        was = self._holds.get((peer, source), (0.0, ""))[0]
        self._holds[(peer, source)] = (max(was, until), reason)

    def held_for(self, source: str, now: float) -> Dict[str, float]:
        """Successors held off for ``source``'s tasks at monotonic ``now`` -> when each hold
        ends (ended holds are forgotten)."""
        if not self._holds:
            return {}
        for key in [k for k, (until, _) in self._holds.items() if until <= now]:
            del self._holds[key]
        return {p: until for (p, s), (until, _) in self._holds.items() if s == source}

    def why(self, peer: str, source: str) -> str:
        """The reason ``peer`` refused ``source``'s tasks ("" when not held off for them)."""
        return self._holds.get((peer, source), (0.0, ""))[1]


def choose_successor(policy: Any, task: Any, view: Any, exclude: Sequence[str],
                     held: Dict[str, float]) -> Any:
    """``policy.choose_successor(task, view, exclude)`` with the successors in ``held`` (those
    held off for the task's source: ``SourceHolds.held_for``) left out as refusing ones are
    (``view.unavailable``) for this one choice; the view is as it was afterwards."""
    if not held:  # the common case, on every task sent: no list built
        return policy.choose_successor(task, view, exclude)
    extra = [p for p in held if p not in view.unavailable]
    if not extra:
        return policy.choose_successor(task, view, exclude)
    for p in extra:
        view.unavailable[p] = held[p]
    try:
        return policy.choose_successor(task, view, exclude)
    finally:
        for p in extra:
            view.unavailable.pop(p, None)


def kept_for_source(holds: SourceHolds, view: Any, source: str, stage: int, now: float) -> bool:
    """Whether a task of ``source`` for ``stage`` kept at monotonic ``now`` was kept for that
    source alone: ``stage`` has successors usable for every task (``view.alive_successors``:
    the view as the routing just saw it) and each is held off for ``source``'s tasks alone, so
    another source's task of the stage may still go to them."""
    if not holds:  # the common case: no hold about one source
        return False
    takers = view.alive_successors(stage)
    held = holds.held_for(source, now)
    return bool(takers) and all(p in held for p in takers)
