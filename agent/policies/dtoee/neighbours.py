"""What a DTO-EE node has heard from its neighbours in the phase: one part of ``DtoeePolicy``.

Each predecessor's newest request and each successor's newest status, and the round of this
slot each is for. A node takes round t's step once it has the round-t request of every live
predecessor and the round-t status of every live successor (``ready``); a final-stage worker
behind its predecessors (restarted mid-phase) joins their round (``joined_round``). An alive
neighbour whose message is late counts with its last one, and a successor not heard from yet
keeps its routing share (``unheard``), so only a neighbour that is gone (silent on the control
plane) loses its share (``requests``, ``statuses``). Also the outgoing
requests and statuses, built from the phase's state with the node's quiet streak
(``requests_out``, ``status_out``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from agent.policies.api import NodeView, Outgoing
from agent.policies.dtoee import protocol as D
from agent.policies.dtoee.payload import from_payload, to_payload
from agent.protocol.wire import Kind


class Neighbours:
    """Requests and statuses heard, by neighbour (all its own state)."""

    def __init__(self) -> None:
        self.last_status: Dict[str, D.Status] = {}  # newest status of each successor, any slot
        self.last_request: Dict[str, D.Request] = {}  # newest request of each predecessor
        self.status_round: Dict[str, int] = {}  # round of each successor's status, this slot
        self.request_round: Dict[str, int] = {}  # round of each predecessor's request, this slot
        self.rounds = 0  # the phase's rounds (start): messages for later rounds are refused

    def start(self, rounds: int) -> None:
        """A new slot of ``rounds`` rounds: nothing heard for them yet (the last messages stay)."""
        self.status_round, self.request_round = {}, {}
        self.rounds = rounds

    def checked(self, cls: Any, payload: Any) -> Any:
        """The ``D.Request`` or ``D.Status`` (``cls``) in ``payload``; ValueError for a round
        past the phase: kept, it would stand for its sender's message of every round left in
        the slot, and make the sender's real ones look late until the next slot."""
        msg = from_payload(cls, payload)
        if msg.round >= self.rounds:
            raise ValueError("%s of %r for round %d, the phase has %d"
                             % (cls.__name__.lower(), msg.sender, msg.round, self.rounds))
        return msg

    def on_request(self, sender: str, req: D.Request) -> None:
        """Keep a predecessor's request unless an older round's (late)."""
        if req.round >= self.request_round.get(sender, -1):
            self.request_round[sender] = req.round
            self.last_request[sender] = req

    def on_status(self, sender: str, st: D.Status) -> None:
        """Keep a successor's status unless an older round's (late)."""
        if st.round >= self.status_round.get(sender, -1):
            self.status_round[sender] = st.round
            self.last_status[sender] = st

    def has_request(self, pred: str, rnd: int) -> bool:
        """``pred``'s request for round ``rnd`` (or later) is in."""
        return self.request_round.get(pred, -1) >= rnd

    def has_status(self, succ: str, rnd: int) -> bool:
        """``succ``'s status for round ``rnd`` (or later) is in."""
        return self.status_round.get(succ, -1) >= rnd

    def ready(self, view: NodeView, rnd: int, receiver: bool, offloader: bool) -> bool:
        """Round ``rnd``'s requests of every live predecessor and statuses of every live
        successor are in (the protocol's order: requests flow forward, statuses come back
        from stage H)."""
        if receiver:
            got = [self.has_request(p, rnd) for p in view.predecessors if p in view.alive]
            if not all(got) or not (any(got) or offloader):
                return False
            if not offloader and all(self.request_round[p] > rnd for p in view.predecessors
                                     if p in view.alive):
                return False  # all it heard have moved past rnd: it joins them (joined_round)
        if offloader:
            return all(self.has_status(s, rnd) for s in view.successors if s in view.alive)
        return True

    def joined_round(self, view: NodeView, rnd: int, offloader: bool,
                     stalled: bool = False) -> int:
        """The round a node answers next: ``rnd``, or, for a node that steps no routing (a
        final-stage worker), a later round that every predecessor has asked for (``stalled``:
        its round timed out, the latest round any of them asked for). Nobody waits for its
        answer to an earlier round any more, and a status counts for every round up to its own
        (``has_status``), so a worker that restarted mid-phase joins its predecessors' round at
        once instead of answering the rounds it missed one request at a time, each after they
        waited out ``round_interval_s`` for it. Every configured predecessor counts, alive or
        not: a restarted node learns who is alive from their messages, one by one, and joining
        at the first would answer with that one's load alone. An offloader catches up without
        such waits: each of its requests for a round its successors have answered gets their
        newest status at once."""
        asked = [self.request_round.get(p, -1) for p in view.predecessors]
        if offloader or not asked:
            return rnd
        return max(rnd, max(asked) if stalled else min(asked))

    def requests(self, view: NodeView, rnd: int) -> List[D.Request]:
        """The requests to sum in round ``rnd``: an alive predecessor whose request is late
        counts with its last one, so a stalled round does not make this node look idle."""
        return [self.last_request[p] for p in view.predecessors if p in self.last_request
                and (p in view.alive or self.has_request(p, rnd))]

    def statuses(self, view: NodeView, rnd: int) -> Dict[str, D.Status]:
        """The statuses to step with in round ``rnd``: a successor that is alive but late keeps
        its last one; only a gone neighbour (no heartbeats) loses its routing mass."""
        return {s: self.last_status[s] for s in view.successors if s in self.last_status
                and (s in view.alive or self.has_status(s, rnd))}

    def unheard(self, view: NodeView, statuses: Mapping[str, D.Status]) -> List[str]:
        """The successors missing from ``statuses`` that keep their share of the routing in
        this round's step (``protocol.split_heard``): the alive ones and those still joining
        (``NodeView.joining``: not heard from yet since the node started, within their silence
        limit; its first phase may start before a successor's first heartbeat). One that was
        alive and fell silent is gone and loses its share."""
        return [s for s in view.successors if s not in statuses
                and (s in view.alive or s in view.joining)]

    def heard(self, view: NodeView, rnd: int, receiver: bool, offloader: bool) -> List[int]:
        """The quiet streaks the live neighbours sent for round ``rnd`` (0 for one not heard)."""
        out = []
        if receiver:
            out += [self.last_request[p].quiet if self.has_request(p, rnd) else 0
                    for p in view.predecessors if p in view.alive]
        if offloader:
            out += [self.last_status[s].quiet if self.has_status(s, rnd) else 0
                    for s in view.successors if s in view.alive]
        return out


def requests_out(pending: Mapping[str, D.Request], alive: Any, quiet: int, slot: int,
                 dests: Optional[Any] = None, round: Optional[int] = None) -> List[Outgoing]:
    """The ``pending`` requests to each live successor (of ``dests``, default all), carrying
    the sender's ``quiet`` streak; ``round`` restamps them (a settled node's answer)."""
    out = []
    for s, r in pending.items():
        if s not in alive or (dests is not None and s not in dests):
            continue
        payload = to_payload(r)
        payload["quiet"] = quiet
        if round is not None:
            payload["round"] = round
        out.append(Outgoing(Kind.DTOEE_REQUEST, s, {"to": s, "payload": payload}, slot,
                            payload["round"]))
    return out


def status_out(status: Optional[D.Status], quiet: int, slot: int, dests: Any,
               round: Optional[int] = None) -> List[Outgoing]:
    """``status`` with the sender's ``quiet`` streak, addressed to each of ``dests``
    (predecessors): only they use it, and a broadcast would wake every sibling and successor
    too, each round. ``round`` restamps it (a settled node's answer)."""
    if status is None:
        return []
    payload = to_payload(status)
    payload["quiet"] = quiet
    if round is not None:
        payload["round"] = round
    return [Outgoing(Kind.DTOEE_STATUS, p, {"payload": payload}, slot, payload["round"])
            for p in dests]
