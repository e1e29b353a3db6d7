"""Custody of tasks and results between hops: the outbox, ACK deadlines, resends and pacing.

A side of the node (``source.SourceSide``, ``worker.WorkerSide``) hands an ``OutItem`` to
``Outbox.send``: a task is routed by the policy (``choose_successor``; held in ``waiting`` while it
names none, offered again oldest first: ``agent.node.outqueue``), encoded, sent (after the emulated
link's pacing, when links are emulated) and kept until a hop it was sent to ACKs its key
(``on_ack``; another peer's ACK of it is ignored, counted as ``ack_not_sent_<peer>``). With no ACK
by its deadline (``ack_timeout_s`` after the link is expected to have carried it: paced, or at the
link's known rate, ``agent.node.linkclock``), ``run_timers`` re-sends it to another successor (a
result: to its source again), at most ``MAX_HOP_RESENDS`` times. The same timer heap carries the
sides' own timers (``call_at``).

Back-pressure: a receiver that cannot take a task (queue full, no route on) names its key in the
``refused`` list of its ACK; ``on_ack`` then marks that successor ``unavailable`` for the
``retry_s`` it asked (``NodeView.alive_successors`` leaves it out; for one source's tasks alone
when the ACK names that source: ``refusal_scope``) and routes the task again at once: to another
successor, or into ``waiting`` until the hold ends (a timer retries then). A task
past its deadline (``OutItem.expires``, sent as the remaining ``ttl_s``) is dropped wherever it
waits (``drop_deadline``), a paced link's queue included: its source has given up on it. ACKs (and
refusals) go once per poll (``flush_replies``), per sender, and so do results on a link without
pacing: RESULTS messages per source (``flush_results``), each result in custody under its own key.

Liveness: what was sent on a dropped data connection (``on_link_down``) is routed again at once; a
late task whose connection is up is not copied onto it again when no other successor is usable
(``held_same_link``: it delivers in order): its deadline moves on. A successor more than the larger
of ``LINK_QUEUE_MAX_S`` and its largest task's link time behind (tasks not ACKed, at the lower of
its configured and measured rate: one task alone never fills a link) is left alone like a refusing
one until that drains (``link_full``), so the queue its heartbeats wait in stays short and a source
rejects the excess (``overload``: ``out_linkhold``). A task the policy fails to route waits
(``routing_error``). A tier's escalation none of whose successors is alive goes back to its worker,
which answers it (``out_takeback``).
A client's answer it cannot deliver counts ``client_answer_undeliverable`` (logged 1/min at most).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

from agent.config.node import NodeConfig
from agent.protocol import wire
from agent.net.links import LinkPacer, LinkRates
from agent.net.transport import Transport
from agent.ops.metrics import NullMetrics
from agent.ops.throttle import Throttle, more_since
from agent.policies.api import AgentPolicy, NodeView, TaskInfo
from agent.node import outqueue
from agent.node.linkclock import LinkClock, rate_measured
from agent.node.out_linkhold import HOLD_MAX_S, HOLD_MIN_S, hold_full_links
from agent.node.outitem import Custody, OutItem, result_batches, wire_bytes_of
from agent.node.out_takeback import answer_stranded, answer_stranded_held
from agent.node.refusal_scope import SourceHolds, choose_successor
from agent.protocol.ack import ack_fields
from agent.node.rejects import Rejects
from agent.node.timerq import TimerQueue

log = logging.getLogger("agent.node.loop")  # these are the loop's steps: logged under its name

MAX_HOP_RESENDS = 10  # per hop; beyond that the task is dropped here and its source re-issues it
_TASK, _RESULT, _ACK = wire.Kind.TASK, wire.Kind.RESULT, wire.Kind.ACK  # Kind.X: 0.1 us a lookup


class Outbox:
    """What the node's sides are handed: send with custody, timers, the node's counters, the
    policy's current view. ``input_queue``: tasks waiting for or in the engine (0 on a source);
    ``capacity``: the capacity owner (``capacity.Capacity``), which writes mu into the view."""

    def __init__(self, cfg: NodeConfig, transport: Transport, policy: AgentPolicy, view: NodeView,
                 capacity: Any, input_queue: Callable[[], int] = lambda: 0, metrics: Any = None):
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.transport = transport
        self.policy = policy
        self.view = view
        self.capacity = capacity
        self.input_queue = input_queue
        self.metrics = metrics if metrics is not None else NullMetrics()
        self.counters: Counter = Counter()
        self.reject = Rejects(self.drop, lambda: self.clock())  # bad input: counted and logged
        self.items = Custody()  # key -> item, its tasks counted (held without a scan)
        self.waiting: List[OutItem] = []  # no alive successor when they were due
        self.pacers = ({p.id: LinkPacer(p.link_rate_bytes_s) for p in cfg.peers}
                       if cfg.emulate_links else {})
        self._paced: List[Any] = []  # heap of (due, seq, item, frames) for emulated links
        self._paced_seq: Dict[str, int] = {}  # key -> seq of its latest paced send (the one to go)
        self._out_count = outqueue.OutputCount()  # O_n for the view
        # measured link rates; each estimate replaces the configured one in the view
        self.link_rates = LinkRates({p.id: p.link_rate_bytes_s for p in cfg.peers})
        self.link_clock = LinkClock()  # links nothing paces: when each is expected to be free
        self._timers = TimerQueue()  # (due, key, side's timer?)
        self._seq = 0
        # (identity, refusal reason[, source it is about alone]) -> keys
        self._replies: Dict[Any, List[str]] = {}
        self._retry_s: Dict[bytes, float] = {}  # identity -> hold asked with its refusals
        self._results: Dict[str, List[OutItem]] = {}  # source -> results for its next RESULTS
        self.refused_why: Dict[str, str] = {}  # successor -> reason of its last refusal
        self.source_holds = SourceHolds(view)  # successors refusing one source's tasks alone
        self.clock = time.monotonic
        self._undeliverable_log = Throttle(60.0, lambda: self.clock())  # a line a minute at most

    # -- counters ----------------------------------------------------------------------------

    def held(self) -> Tuple[int, int]:
        """(tasks, tensor bytes) held for a successor: sent and not ACKed, or waiting."""
        c, w = self.items, self.waiting  # per TASK taken: no generator while nothing waits
        return c.tasks + len(w), c.task_bytes + (sum(i.nbytes for i in w) if w else 0)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (written to stats.json)."""
        self.counters[name] += n

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` messages or tasks dropped for ``reason`` (counter ``drop_<reason>``)."""
        self.counters["drop_" + reason] += n
        for _ in range(n):
            self.metrics.dropped(reason)

    def guarded(self, fn: Callable[..., None], *args: Any) -> None:
        """Run one step of the loop; an unexpected error is logged and counted, never fatal."""
        try:
            fn(*args)
        except Exception:
            self.counters["internal_error"] += 1
            if self.counters["internal_error"] <= 5:
                log.warning("error in %s (serving goes on)", getattr(fn, "__name__", fn),
                            exc_info=True)

    # -- the view ----------------------------------------------------------------------------

    def current_view(self) -> NodeView:
        """The policy's view with this moment's queue lengths (O_n: ``outqueue``) and mu."""
        v = self.view
        v.input_queue = self.input_queue()
        v.output_queue = self._out_count(self.policy, self.waiting, self._paced, self.items,
                                         self.clock()) if self._paced else len(self.waiting)
        self.capacity.refresh(v)
        if v.unavailable:
            now = self.clock()
            for peer in [p for p, until in v.unavailable.items() if until <= now]:
                del v.unavailable[peer]
        return v

    # -- replies on the ROUTER (no custody: an ACK or a client's answer is sent once) --------

    def ack(self, identity: bytes, keys: List[str]) -> None:
        """ACK ``keys`` to the hop that sent them (sent with the next ``flush_replies``)."""
        self._replies.setdefault((identity, ""), []).extend(keys)

    def refuse(self, identity: bytes, key: str, reason: str, retry_s: float = 0.0,
               source: str = "") -> None:
        """Refuse task ``key`` to its sender for ``reason`` (``overload``, ``no_route``): it
        re-routes or holds the task at once and leaves this node alone for ``retry_s``, for
        ``source``'s tasks alone when one is named (``refusal_scope``)."""
        self._replies.setdefault((identity, reason) + ((source,) if source else ()),
                                 []).append(key)
        self._retry_s[identity] = max(retry_s, self._retry_s.get(identity, 0.0))
        self.counters["refused_" + reason] += 1
        self.metrics.refused(reason)

    def flush_replies(self) -> None:
        """Send the ACKs and refusals collected since the last call: one message per sender
        and reason (the loop calls it once per poll)."""
        if not self._replies:
            return
        replies, self._replies = self._replies, {}
        retry, self._retry_s = self._retry_s, {}
        for key, keys in replies.items():  # (identity, reason[, source])
            fields = ack_fields(keys, key[1], retry.get(key[0], 0.0), *key[2:])
            self.transport.reply(key[0], wire.encode(_ACK, self.node_id, fields))

    def flush_results(self, now: Optional[float] = None) -> None:
        """Send the results collected since the last call: RESULTS messages per source (of at
        most ``wire.MAX_BATCH`` results, one header's bytes and this node's ``max_message_bytes``:
        a fleet runs one value, so the source takes them), one send per batch, not per task."""
        if not self._results:
            return
        batches, self._results = self._results, {}
        now = self.clock() if now is None else now
        for dest, items in batches.items():
            live = [it for it in items if self.items.get(it.key) is it]
            for part, frames in result_batches(self.node_id, live, self.cfg.max_message_bytes):
                if not self.transport.send(dest, frames):
                    for it in part:
                        self._unsent(it, now)

    def answer_client(self, identity: bytes, fields: Dict[str, Any]) -> None:
        """Send a RESULT to a local client (one it cannot get: counted, logged; module doc)."""
        if self.transport.reply(identity, wire.encode(_RESULT, self.node_id, fields), True):
            return
        self.counters["client_answer_undeliverable"] += 1
        left = self._undeliverable_log.due()
        if left is not None:  # the client sent the input, then went away (or reads nothing)
            log.warning("an answer to a client (its task %r) could not be delivered: its connection"
                        " is gone, or it reads no answers%s", fields.get("id"), more_since(left))

    # -- sending with custody ----------------------------------------------------------------

    def send(self, item: OutItem, now: float, again: bool = False) -> None:
        """Route (tasks), send and keep ``item`` until its ACK; see the module docstring.
        ``again``: a task held, refused or late; a new one may join held ones (``outqueue``)."""
        if item.expires and now >= item.expires:
            return self.drop("deadline")  # its source has given up on it
        if item.kind == _TASK:
            if not again and outqueue.behind(self.waiting, item, self.policy):
                outqueue.hold(self.waiting, item)  # the tail of the output queue; its head goes
                return self.retry_waiting(now)
            hold_full_links(self, now)
            info = TaskInfo(item.fields["id"], item.fields["stage"], item.nbytes)
            try:
                dest = choose_successor(self.policy, info, self.current_view(), item.tried,
                                        self.source_holds.held_for(item.fields["source"], now))
            except Exception:  # a policy's error must not lose the task: it waits, counted
                self.counters["routing_error"] += 1
                if self.counters["routing_error"] <= 5:  # a bug to report, not a log flood
                    log.warning("the policy failed to route a task; it waits", exc_info=True)
                dest = None
            if dest is None:  # held at its place by age, or a stranded escalation answered
                return None if answer_stranded(self, item, now) else outqueue.hold(self.waiting, item)
            item.dest = dest
            self.counters["sent_to_" + dest] += 1  # the routing actually used, per successor
        item.fields["resends"] = item.fields.get("resends", 0)
        pacer = self.pacers.get(item.dest)
        item.conn = self.transport.data_drops.get(item.dest, 0)
        if item.kind == _RESULT and pacer is None:  # goes out with the pass's RESULTS
            self.items[item.key] = item
            self._results.setdefault(item.dest, []).append(item)
            item.link_start, item.deadline = now, now + self.cfg.ack_timeout_s
            return self._timers.push(item.deadline, item.key, False)
        nbytes = wire_bytes_of(item.nbytes)  # the link carries the framing too
        due = now if pacer is None else pacer.schedule(now, nbytes)
        if item.expires:  # what is left of it when it leaves (a paced link's wait is spent here)
            item.fields["ttl_s"] = item.expires - due
        tensors = [] if item.tensor is None else [item.tensor]  # not for a pass's RESULTS
        frames = wire.encode(item.kind, self.node_id, item.fields, tensors)
        self.items[item.key] = item
        # The transfer delay D_nm ("transmitted, then wait at m" in MDI-Exit) runs from the
        # moment the link starts carrying this task to its ACK (the ACK's way back is a small
        # message): waiting behind earlier tasks on the link is output-queue time (O_n).
        if pacer is not None:
            item.link_start = due - nbytes / pacer.rate_bytes_s
            self._seq += 1
            self._paced_seq[item.key] = self._seq
            heapq.heappush(self._paced, (due, self._seq, item, frames))
            item.deadline = due + self.cfg.ack_timeout_s
        else:
            item.link_start = now
            if not self.transport.send(item.dest, frames):
                return self._unsent(item, now)
            # its ACK cannot come before the link has carried it and what went before it
            item.link_end = self.link_clock.reserve(
                item.dest, now, nbytes, self.view.link_rate_bytes_s.get(item.dest, 0.0))
            item.deadline = item.link_end + self.cfg.ack_timeout_s
        self._timers.push(item.deadline, item.key, False)

    def _unsent(self, item: OutItem, now: float) -> None:
        # Peer unreachable now: try elsewhere soon, backing off if every peer fails.
        item.link_start = item.link_end = 0.0
        item.deadline = now + min(self.cfg.ack_timeout_s, 0.02 * item.resends)
        self._timers.push(item.deadline, item.key, False)

    def cancel(self, key: str) -> None:
        """Give up custody of ``key`` (its sender re-issues it under a new key)."""
        self.items.pop(key, None)

    def on_ack(self, peer: str, keys: List[str], now: float, refused: List[str] = (),
               retry_s: float = 0.0, reason: str = "", source: str = "") -> None:
        """``peer`` ACKed ``keys``: custody of those sent to it ends; first sends time the link.
        ``refused`` keys come back at once: ``peer`` is left alone for ``retry_s`` (within
        HOLD_MIN_S..HOLD_MAX_S), for ``source``'s tasks alone when it names another source
        than this node, and each task is routed again, to another successor or held."""
        if refused:
            until = now + min(max(retry_s, HOLD_MIN_S), HOLD_MAX_S)
            if source and source != self.node_id:  # a source's tasks are all its own
                self.source_holds.hold(peer, source, until, reason, now)
            else:
                self.view.unavailable[peer] = max(self.view.unavailable.get(peer, 0.0), until)
                self.refused_why[peer] = reason
            self._timers.push(until, "", False)  # offer held tasks again when the hold ends
            for key in refused:
                item = self.items.get(key)
                if item is None or item.dest != peer:
                    continue
                del self.items[key]
                self.counters["refused_by_" + peer] += 1
                item.tried.append(peer)
                self.link_clock.carried(peer, item.link_end, now)  # it came, to be refused
                item.link_start = 0.0
                self.send(item, now, True)
        measured = 0
        for key in keys:
            item = self.items.get(key)
            if item is None:
                continue
            if item.dest != peer and peer not in item.tried:  # not sent there: not its to end
                self.counters["ack_not_sent_" + peer] += 1
                continue
            del self.items[key]
            self.counters["acked"] += 1
            if item.link_end and item.dest == peer:  # its link has carried it (a reserved one)
                self.link_clock.carried(peer, item.link_end, now)
            # only a first send's ACK measures: after a resend it may come from the other hop
            if item.link_start > 0 and item.resends == 0 and item.dest == peer:
                self.link_rates.observe(peer, item.link_start, now, wire_bytes_of(item.nbytes))
                measured += 1
                if item.kind == _TASK:  # D_nm for the policy
                    self.policy.on_transfer(peer, now - item.link_start, item.nbytes)
        if measured:  # once per ACK message
            rate_measured(self.link_rates, peer, self.view, self.counters, self.metrics)

    def on_link_down(self, peer: str, now: float) -> None:
        """``peer``'s data connection dropped, and with it what was sent on it: route it again."""
        self.link_clock.reset(peer)
        for item in self.items.values():
            if item.dest == peer and item.conn < self.transport.data_drops.get(peer, 0):
                item.deadline = now
                self._timers.push(now, item.key, False)

    def _same_link_only(self, item: OutItem, now: float) -> bool:
        """True when a late task would only be re-sent to where it went, on the connection it
        went by (still up): no copy is sent, its ACK deadline moves on (module docstring)."""
        if (item.kind != _TASK or item.link_start <= 0 or item.dest not in self.view.alive
                or item.conn != self.transport.data_drops.get(item.dest, 0)
                or (item.expires and now >= item.expires)):
            return False
        if any(p != item.dest for p in self.current_view().alive_successors(item.fields["stage"])):
            return False
        item.deadline = now + self.cfg.ack_timeout_s
        self._timers.push(item.deadline, item.key, False)
        self.counters["held_same_link"] += 1
        return True

    def take_back(self, wanted: Callable[[OutItem], bool]) -> Optional[OutItem]:
        """Remove and return the oldest held task ``wanted`` accepts (None: none held)."""
        return outqueue.take_back(self.waiting, wanted)

    def expire_waiting(self, now: float) -> None:
        """Drop held tasks past their deadline (their source has given up on them)."""
        gone = outqueue.expire(self.waiting, now)
        if gone:
            self.drop("deadline", gone)

    def retry_waiting(self, now: float) -> None:
        """Offer held tasks to the policy again, oldest first (``outqueue.reoffer_held``)."""
        self.expire_waiting(now)
        answer_stranded_held(self, now)  # escalations whose every successor is gone: out_takeback
        if self.waiting and self.current_view().alive_successors():
            outqueue.reoffer_held(self, now)  # head first, per source where kept for one

    # -- timers ------------------------------------------------------------------------------

    def call_at(self, due: float, key: str) -> None:
        """Hand ``key`` back to the side's ``on_timer`` at monotonic time ``due``."""
        self._timers.push(due, key, True)

    def next_due(self) -> Optional[float]:
        """Earliest pending deadline or paced departure (None: nothing scheduled)."""
        due = self._timers.next_due()
        if self._paced and (due is None or self._paced[0][0] < due):
            due = self._paced[0][0]
        return due

    def run_paced(self, now: float) -> None:
        """Hand every paced message whose link slot has come to its socket; a task whose
        deadline passed while it waited is dropped (``deadline``), as its receiver would."""
        while self._paced and self._paced[0][0] <= now:
            _, seq, item, frames = heapq.heappop(self._paced)
            if self._paced_seq.get(item.key) != seq:  # sent again since (link down): that goes
                continue
            del self._paced_seq[item.key]
            if self.items.get(item.key) is not item:
                continue
            if item.expires and now >= item.expires:
                del self.items[item.key]
                self.drop("deadline")
            elif not self.transport.send(item.dest, frames):
                self._unsent(item, now)  # backing off as an unpaced send does: no spin

    def run_timers(self, now: float, on_timer: Callable[[str, float], None]) -> None:
        """Re-send items past their ACK deadline; pass due side timers to ``on_timer``."""
        pop = self._timers.pop_due
        while (entry := pop(now)) is not None:
            _, _, key, side = entry
            if side or not key:  # a side's timer, or a refusing successor's hold ended
                on_timer(key, now) if side else self.retry_waiting(now)
                continue
            item = self.items.get(key)
            if item is None or item.deadline > now or self._same_link_only(item, now):
                continue
            del self.items[key]
            item.resends += 1
            if item.resends > MAX_HOP_RESENDS and now >= item.keep_until:
                self.drop("undeliverable")  # given up, not re-sent: no ``resends``
                continue
            self.counters["resends"] += 1
            item.tried.append(item.dest)
            item.fields["resends"] = item.fields.get("resends", 0) + 1
            self.send(item, now, True)
