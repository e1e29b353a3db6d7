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
for an ``overload`` (every task it is sent is that source's; an older sender, which ignores the
field, then holds the same off as before) but names it for a ``no_route`` all the same: only a
hold about one source grows while that source is gone (below); held off for every task one
heartbeat interval at a time, a worker of one source gone for good was offered and refused
each of its held tasks some 80 times a second. A source takes a refusal naming itself as one of
every task (its tasks are all its own: ``Outbox.on_ack``).

A ``no_route`` hold about a source this node heard and now hears no more (gone from
``NodeView.alive``: killed, or cut off here too) grows while it stays gone: each refusal again
doubles it, from the ``retry_s`` asked up to ``NO_ROUTE_HOLD_MAX_S``. Held one heartbeat
interval each time, every task of that source held here would be offered and refused again
until it expired: some 80 refusals a second, each task's tensor sent anew. Such a hold ends as
soon as the source is heard again here (its heartbeat, or a task it sends here itself:
``back``), so a restarted source's tasks go on at once; one about a source still alive here
(cut off at the successor only) does not grow: nothing here would see that route come back.

A task of a source whose every usable successor is held off for that source's tasks alone is
kept for that source alone (``kept_for_source``): where held tasks are offered head first
(``agent.node.outqueue``), it holds back that source's later tasks of its stage, not others'.
"""

from __future__ import annotations

from typing import Any, Collection, Dict, Optional, Sequence, Tuple


def scope_of(source: str, sources: Collection[str], reason: str = "") -> str:
    """The source a worker of ``sources`` names when it refuses a task of ``source`` for
    ``reason``, a reason about that source alone: "" for a worker of one source (every task it
    gets is its), except for a ``no_route``, whose hold at the sender grows only when it names
    its source (module docstring)."""
    return source if reason == "no_route" or len(sources) > 1 else ""


# a no_route hold about a source gone here grows to this at most (``SourceHolds.hold``): a
# route that comes back unseen here (the source alive here all along is never held so long)
# waits that long at most, while a source gone for good has its held tasks refused a few
# times until they expire instead of five times a second
NO_ROUTE_HOLD_MAX_S = 5.0

_Hold = Tuple[float, str, bool]  # (monotonic end, reason, made while its source was gone here)


class SourceHolds:
    """Successors held off for one source's tasks: (peer, source) -> (monotonic time the hold
    ends, reason of the refusal, whether it grows and ends with the source's return).
    ``view``: the node's ``NodeView`` (its ``alive`` and ``peer_state`` as they change), which
    says whether a source is gone here (None: never; the holds are as asked)."""

    def __init__(self, view: Any = None) -> None:
        self._view = view
        self._holds: Dict[Tuple[str, str], _Hold] = {}
        self._grown: Dict[Tuple[str, str], float] = {}  # the last grown hold's length (s)

    def __bool__(self) -> bool:
        return bool(self._holds)

    def gone(self, source: str) -> bool:
        """Whether ``source`` was heard here and is no longer (``view.alive``)."""
        v = self._view
        return v is not None and source in v.peer_state and source not in v.alive

    def _over(self, key: Tuple[str, str], hold: _Hold, now: float) -> bool:
        """Whether ``hold`` has ended at monotonic ``now``: its time is up, or it was made
        while its source was gone here and the source is back."""
        return hold[0] <= now or (hold[2] and not self.gone(key[1]))

    def hold(self, peer: str, source: str, until: float, reason: str,
             now: Optional[float] = None) -> None:
        """Leave ``peer`` alone for ``source``'s tasks until monotonic ``until`` (a later hold
        already kept stays), ``reason`` being why it refused. With monotonic ``now``, a
        ``no_route`` hold about a source gone here is twice the last one of the same peer and
        source (module docstring; refusals of tasks sent before that one began are one step),
        at least ``until`` and at most ``NO_ROUTE_HOLD_MAX_S``."""
        key = (peer, source)
        was = self._holds.get(key)
        grows = reason == "no_route" and now is not None and self.gone(source)
        if grows:
            last_s = self._grown.get(key, 0.0)
            # tasks sent before the hold began are refused under it: one offer, one step
            if not (was is not None and was[2] and was[0] > now):
                last_s = min(2.0 * last_s, NO_ROUTE_HOLD_MAX_S)
            self._grown[key] = length_s = max(until - now, last_s)
            until = now + length_s
        else:
            self._grown.pop(key, None)  # the source is back (or was never gone): start over
        if was is not None and was[0] > until and not (was[2] and not self.gone(source)):
            self._holds[key] = (was[0], reason, was[2])  # the later hold kept stays, as it ends
        else:
            self._holds[key] = (until, reason, grows)

    def held_for(self, source: str, now: float) -> Dict[str, float]:
        """Successors held off for ``source``'s tasks at monotonic ``now`` -> when each hold
        ends (ended holds are forgotten, those of a source heard again included)."""
        if self._grown:  # a source back here starts over from the hold it asks
            for key in [k for k in self._grown if not self.gone(k[1])]:
                del self._grown[key]
        if not self._holds:
            return {}
        for key in [k for k, h in self._holds.items() if self._over(k, h, now)]:
            del self._holds[key]
        return {p: h[0] for (p, s), h in self._holds.items() if s == source}

    def back(self, source: str) -> None:
        """``source`` was heard from directly (a task it sent: proof it is back before its
        heartbeat is): end the holds about it made while it was gone here."""
        for key in [k for k, h in self._holds.items() if k[1] == source and h[2]]:
            del self._holds[key]
            self._grown.pop(key, None)

    def why(self, peer: str, source: str) -> str:
        """The reason ``peer`` refused ``source``'s tasks ("" when not held off for them)."""
        hold = self._holds.get((peer, source))
        return "" if hold is None else hold[1]


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
