"""The node loop: one I/O thread around a zmq Poller, plus (on a worker) one inference thread.

Data plane, hop by hop: a sender keeps every task/result in ``outbox`` until the receiver ACKs
it; with no ACK within ``ack_timeout_s`` (or when the send fails at once because the peer is
gone) it re-sends the task to another successor (a result: to its source again). Receivers ACK
on arrival and drop duplicates by task key. End to end: a source keeps each task until its
result arrives and re-issues it after ``result_timeout_s`` (covering a worker that died holding
it). So a crash loses no task; at worst it is answered late.

Control plane: heartbeats (queue state) every ``heartbeat_interval_s``; a neighbour silent for
``neighbour_timeout_rounds`` heartbeat periods is gone (``view.alive``), which the policy sees at
once. Policy messages (DTO-EE request/status, thresholds) go through ``AgentPolicy.on_control``
and ``on_tick``.

Input is never trusted: every malformed, unexpected or undeliverable message is counted in
``counters`` (written to ``<state_dir>/stats.json`` and logged) and dropped.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
from collections import Counter, OrderedDict
from typing import Any, Callable, Dict, List, Optional

from agent.net import wire
from agent.net.links import LinkPacer
from agent.config.node import NodeConfig
from agent.policies.api import AgentPolicy, NodeView, Outgoing, TaskInfo
from agent.node.roles import OutItem, SourceRole, WorkerRole
from agent.node.status import StatusMixin
from agent.node.book import ReplaySet, SourceBook
from agent.net.transport import CLIENT, CONTROL, DATA, FD, REPLY, Transport
from agent.net.wire import Kind, WireError

log = logging.getLogger(__name__)

MAX_HOP_RESENDS = 10  # per hop; beyond that the task is dropped here and its source re-issues it


class Node(SourceRole, WorkerRole, StatusMixin):
    """One agent. ``run()`` serves until ``stop()`` (e.g. from a SIGTERM handler)."""

    def __init__(self, cfg: NodeConfig, transport: Transport, policy: AgentPolicy, view: NodeView,
                 specs: Any = None, runner: Any = None, replay: Optional[ReplaySet] = None,
                 book: Optional[SourceBook] = None, hooks: Any = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.cfg = cfg
        self.transport = transport
        self.policy = policy
        self.view = view
        self.specs = specs or {}  # stage -> StageSpec of each stage this worker runs
        self.runner = runner
        self.replay = replay
        self.book = book
        self.hooks = hooks
        self.clock = clock
        self.wall = wall
        self.counters: Counter = Counter()
        self.outbox: Dict[str, OutItem] = {}
        self.waiting: List[OutItem] = []  # no alive successor when they were due
        self.seen: "OrderedDict[str, None]" = OrderedDict()
        self.last_heard: Dict[str, float] = {}
        self.sources = {p.id for p in cfg.sources}
        self.pacers = ({p.id: LinkPacer(p.link_rate_bytes_s) for p in cfg.peers}
                       if cfg.emulate_links else {})
        self._paced: List[Any] = []  # heap of (due, seq, item) for emulated links
        self._timers: List[Any] = []  # heap of (due, seq, key, deadline) ACK deadlines
        self._seq = 0
        self._stopping = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._wfd, False)
        self.rng = policy.rng
        self.interarrival_s = 1.0 / cfg.arrival_rate_tasks_s if cfg.arrival_rate_tasks_s > 0 else 0
        self.arrivals_done = cfg.role != "source" or cfg.arrival != "poisson" or self.interarrival_s == 0
        self.received = 0  # tasks accepted here (arrival-rate estimate of a worker)
        self._save_due = False  # a slot's state save waits for the configuration phase's end

    # -- life cycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler)."""
        self._stopping = True
        try:
            os.write(self._wfd, b"x")
        except OSError:
            pass

    def run(self) -> None:
        """Serve until ``stop()``; then drain (sources) and write final stats."""
        self.transport.register_fd(self._rfd)
        if self.runner is not None:
            self.transport.register_fd(self.runner.wake_fd)
        now = self.clock()
        nxt = {"hb": now, "tick": now, "status": now + self.cfg.status_interval_s,
               "flush": now + self.cfg.records_flush_interval_s, "arrival": now,
               "slot": now + self.cfg.slot_length_s}
        drain_until = None
        while True:
            now = self.clock()
            if self._stopping and drain_until is None:
                drain_until = now + (self.cfg.drain_timeout_s if self.book else 0.0)
                self.arrivals_done = True
                log.info("stopping: %s", self._status_line())
            if drain_until is not None and (now >= drain_until or not self._in_flight()):
                break
            due = [nxt["hb"], nxt["tick"], nxt["status"], nxt["flush"], nxt["slot"]]
            if not self.arrivals_done:
                due.append(nxt["arrival"])
            if self._timers:
                due.append(self._timers[0][0])
            if self._paced:
                due.append(self._paced[0][0])
            if drain_until is not None:
                due.append(drain_until)
            if self.hooks:  # wake often enough for the systemd watchdog even when idle
                due.append(now + self.hooks.watchdog_interval_s)
            for ev in self.transport.poll(max(0.0, min(due) - now)):
                self._dispatch(ev)
            now = self.clock()
            self._guarded(self._run_paced, now)
            self._guarded(self._run_timers, now)
            if not self.arrivals_done and now >= nxt["arrival"]:
                self._guarded(self._arrival, now)
                gap = self.policy.interarrival_s(self.view, now) or self.interarrival_s
                nxt["arrival"] = max(nxt["arrival"] + self.rng.expovariate(1.0 / gap), now - 1.0)
            if now >= nxt["hb"]:
                nxt["hb"] = now + self.cfg.heartbeat_interval_s
                self._guarded(self._heartbeat, now)
            if now >= nxt["tick"]:
                nxt["tick"] = now + self.policy.tick_interval_s
                self._guarded(self._tick, now)
            if now >= nxt["slot"]:
                nxt["slot"] = now + self.cfg.slot_length_s
                self._guarded(self._slot, now)
            elif self._save_due:
                self._guarded(self._save_state)
            if now >= nxt["flush"]:
                nxt["flush"] = now + self.cfg.records_flush_interval_s
                if self.book:
                    self.book.records.flush()
            if now >= nxt["status"]:
                nxt["status"] = now + self.cfg.status_interval_s
                self.write_stats()
                log.info("%s", self._status_line())
            if self.hooks:
                self.hooks.health(self.runner is None or self.runner.alive)
        self._finish()

    def _tick(self, now: float) -> None:
        self._publish(self.policy.on_tick(self._refresh_view(), now))
        self._retry_waiting(now)

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        """Run one step of the loop; an unexpected error is logged and counted, never fatal."""
        try:
            fn(*args)
        except Exception:
            self.counters["internal_error"] += 1
            if self.counters["internal_error"] <= 5:
                log.warning("error in %s (serving goes on)", getattr(fn, "__name__", fn),
                            exc_info=True)

    def _in_flight(self) -> bool:
        return bool(self.book and self.book.pending) or bool(self.outbox) or bool(
            self.runner is not None and self.runner.queued)

    def _finish(self) -> None:
        now, w = self.clock(), self.wall()
        if self.book:
            for tid in list(self.book.pending):
                self.book.lose(tid, w, now, "shutdown")
            self.book.records.close()
        if self.hooks:
            self.hooks.save_state(self.policy.snapshot())
        self.write_stats()
        log.info("stopped: %s", self._status_line())
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass

    # -- events ------------------------------------------------------------------------------

    def _dispatch(self, ev) -> None:
        tag, who, frames = ev
        if tag == FD:
            if who == self._rfd:
                try:
                    os.read(self._rfd, 4096)
                except OSError:
                    pass
            elif self.runner is not None:
                for done in self.runner.take_done():
                    self._guarded(self._inference_done, done)
            return
        try:
            if wire.frames_nbytes(frames) > self.cfg.max_message_bytes:
                raise WireError("oversized", "message above max_message_bytes")
            if tag == CONTROL:
                _, frames = wire.split_topic(frames)
            msg = wire.decode(frames)
        except WireError as exc:
            self.counters["drop_" + exc.reason] += 1
            self._dropped(exc.reason)
            return
        handler = {DATA: self._on_data, REPLY: self._on_reply, CLIENT: self._on_client}.get(tag)
        try:
            if tag == CONTROL:
                self._on_control(msg)
            elif handler is not None:
                handler(who, msg)
        except Exception:  # a well-formed message that still breaks a handler: never fatal
            self._drop("handler_error")
            if self.counters["drop_handler_error"] <= 5:
                log.warning("dropped a %s message from %s after an error", msg.kind.name,
                            msg.sender, exc_info=True)

    def _dropped(self, reason: str) -> None:
        if self.hooks:
            self.hooks.metrics.dropped(reason)

    def _drop(self, reason: str) -> None:
        self.counters["drop_" + reason] += 1
        self._dropped(reason)

    def _on_reply(self, peer: str, msg: wire.Message) -> None:
        if msg.kind != Kind.ACK:
            return self._drop("unexpected_kind")
        now = self.clock()
        for key in msg.fields["keys"]:
            item = self.outbox.pop(key, None)
            if item is not None:
                self.counters["acked"] += 1
                # D_nm for the policy. Only a first send counts: after a hop resend the ACK
                # may come from the earlier successor.
                if (item.kind == Kind.TASK and item.link_start > 0 and item.resends == 0
                        and item.dest == peer):
                    self.policy.on_transfer(peer, now - item.link_start,
                                            0 if item.tensor is None else item.tensor.nbytes)

    def _on_data(self, identity: bytes, msg: wire.Message) -> None:
        if msg.kind == Kind.TASK and self.runner is not None:
            self._on_task(identity, msg)
        elif msg.kind == Kind.RESULT and self.book is not None:
            self._on_result(identity, msg)
        else:
            self._drop("unexpected_kind")

    def _on_control(self, msg: wire.Message) -> None:
        if msg.sender not in self.cfg_peer_ids:
            return self._drop("unknown_sender")
        now = self.clock()
        was_alive = msg.sender in self.view.alive
        self.last_heard[msg.sender] = now
        if msg.kind in (Kind.HEARTBEAT, Kind.QUEUE_STATE):
            self.view.peer_state[msg.sender] = dict(msg.fields)
        if not was_alive:
            self._set_alive(msg.sender, True)
        try:
            out = self.policy.on_control(msg, self._refresh_view(), now)
        except (ValueError, TypeError, KeyError) as exc:  # payload that does not fit the policy
            log.debug("policy rejected %s from %s: %s", msg.kind.name, msg.sender, exc)
            return self._drop("bad_payload")
        self._publish(out)

    @property
    def cfg_peer_ids(self):
        return self.transport.peers

    # -- sending with custody ----------------------------------------------------------------

    def _send(self, item: OutItem, now: float) -> None:
        if item.kind == Kind.TASK:
            info = TaskInfo(item.fields["id"], item.fields["stage"],
                            0 if item.tensor is None else item.tensor.nbytes)
            dest = self.policy.choose_successor(info, self._refresh_view(), item.tried)
            if dest is None:
                self.waiting.append(item)
                return
            item.dest = dest
            self.counters["sent_to_" + dest] += 1  # the routing actually used, per successor
        tensors = [] if item.tensor is None else [item.tensor]
        item.fields["resends"] = item.fields.get("resends", 0)
        frames = wire.encode(item.kind, self.cfg.node_id, item.fields, tensors)
        self.outbox[item.key] = item
        pacer = self.pacers.get(item.dest)
        # The transfer delay D_nm ("transmitted, then wait at m" in MDI-Exit) runs from the
        # moment the link starts carrying this task to its ACK (the ACK's way back is a small
        # message): waiting behind earlier tasks on the link is output-queue time (O_n).
        if pacer is not None:
            nbytes = wire.frames_nbytes(frames)
            due = pacer.schedule(now, nbytes)
            item.link_start = due - nbytes / pacer.rate_bytes_s
            self._seq += 1
            heapq.heappush(self._paced, (due, self._seq, item, frames))
            item.deadline = due + self.cfg.ack_timeout_s
        else:
            item.deadline = now + self.cfg.ack_timeout_s
            item.link_start = now
            if not self.transport.send(item.dest, frames):
                item.link_start = 0.0
                # Peer unreachable now: try elsewhere soon, backing off if every peer fails.
                item.deadline = now + min(self.cfg.ack_timeout_s, 0.02 * item.resends)
        self._schedule(item.deadline, item.key)

    def _run_paced(self, now: float) -> None:
        while self._paced and self._paced[0][0] <= now:
            _, _, item, frames = heapq.heappop(self._paced)
            if self.outbox.get(item.key) is item and not self.transport.send(item.dest, frames):
                item.link_start = 0.0
                item.deadline = now
                self._schedule(now, item.key)

    def _schedule(self, due: float, key: str) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (due, self._seq, key))

    def _run_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, key = heapq.heappop(self._timers)
            if key.startswith("E:"):
                self._result_timeout(key[2:], now)
                continue
            item = self.outbox.get(key)
            if item is None or item.deadline > now:
                continue
            del self.outbox[key]
            item.resends += 1
            self.counters["resends"] += 1
            if item.resends > MAX_HOP_RESENDS:
                self._drop("undeliverable")
                continue
            item.tried.append(item.dest)
            item.fields["resends"] = item.fields.get("resends", 0) + 1
            self._send(item, now)

    # -- control -----------------------------------------------------------------------------

    def _publish(self, out: List[Outgoing]) -> None:
        for o in out or ():
            self.transport.publish(o.dest, wire.encode(o.kind, self.cfg.node_id, o.fields,
                                                       slot=o.slot, round=o.round))

    def _heartbeat(self, now: float) -> None:
        v = self._refresh_view()
        self.transport.publish(wire.BROADCAST, wire.encode(Kind.HEARTBEAT, self.cfg.node_id, {
            "role": self.cfg.role, "stage": self.cfg.stage, "capacity_flops": v.capacity_flops,
            "input_queue": v.input_queue, "output_queue": v.output_queue,
            "service_time_s": v.service_time_s}))
        if self.hooks:
            self.hooks.gauges(v, self.policy.routing(), self.policy.thresholds())
        limit = self.cfg.neighbour_timeout_rounds * self.cfg.heartbeat_interval_s
        for peer in list(self.view.alive):
            if now - self.last_heard.get(peer, -1e18) > limit:
                self._set_alive(peer, False)
        self._retry_waiting(now)

    def _retry_waiting(self, now: float) -> None:
        """Offer held tasks to the policy again (a successor came back, queues changed)."""
        if self.waiting and self.view.alive_successors():
            items, self.waiting = self.waiting, []
            for item in items:
                self._send(item, now)

    def _set_alive(self, peer: str, alive: bool) -> None:
        if alive:
            self.view.alive.add(peer)
        else:
            self.view.alive.discard(peer)
        log.info("neighbour %s is %s", peer, "alive" if alive else "gone")
        self.counters["neighbour_joined" if alive else "neighbour_gone"] += 1
        if self.hooks:
            self.hooks.metrics.neighbour_alive(peer, alive)
        self.policy.on_peers_changed(self._refresh_view())
        if alive:
            self._retry_waiting(self.clock())

    def _slot(self, now: float) -> None:
        if self.cfg.role == "worker":
            self.view.arrival_rate_tasks_s = self.received / self.cfg.slot_length_s
            self.received = 0
        self._save_due = True
        self._save_state()

    def _save_state(self) -> None:
        """Save the policy's state once per slot, but not in a configuration phase: the save
        fsyncs twice (milliseconds on a busy disk), and the loop cannot answer a round
        meanwhile, so every neighbour waiting on this node would stall with it."""
        if not self._save_due or getattr(self.policy, "configuring", False):
            return
        self._save_due = False
        if self.hooks:
            self.hooks.save_state(self.policy.snapshot())

    def _refresh_view(self) -> NodeView:
        v = self.view
        v.input_queue = self.runner.queued if self.runner is not None else 0
        v.output_queue = len(self.outbox) + len(self.waiting)
        if self.hooks:
            self.hooks.refresh(v)
        return v
