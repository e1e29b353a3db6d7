"""The node loop: one I/O thread around a zmq Poller, composed of the parts ``build`` hands it.

A task's tensor through one node: the transport returns a TASK or RESULT from the ROUTER; the
loop decodes it (counting and dropping anything malformed) and hands it to its side -- a worker
(``worker.WorkerSide``) checks, ACKs and queues it for the inference thread, whose wake-up fd
the loop also polls; the exit decision then sends a RESULT or a next-stage TASK -- or a source
(``source.SourceSide``), which records the result. Whatever a side sends goes through the
``outbox.Outbox``: routed by the policy, held until the next hop ACKs it, re-sent to another
successor when no ACK comes within ``ack_timeout_s`` (or the send fails at once). End to end, a
source re-issues a task with no result after ``result_timeout_s`` (covering a worker that died
holding it). So a crash loses no task; at worst it is answered late.

Control plane: heartbeats (queue state) every ``heartbeat_interval_s``; a neighbour silent for
``neighbour_timeout_rounds`` heartbeat periods (more on slow links) is gone (``view.alive``), which
the policy sees at once; so is one whose data connection dropped (``LINK_DOWN``: its process died,
or its connection's heartbeats stopped), until it is heard again. Tasks sent on it and not ACKed are
routed again at once (``Outbox.on_link_down``); each dropped and re-established data connection is
counted (``data_link_down``, ``data_link_up``) and logged with its time. Policy messages (DTO-EE
request/status, thresholds) go through ``AgentPolicy.on_control`` and ``on_tick``. A node no peer
connects to (missing from their configs) says so once (``reach.ReachWatch``).

No route: after every change in who is alive (and every heartbeat) the loop works out the
first stage it has no live route to (``policies.api.first_unreachable_stage``, from the
successors' own ``no_route``), keeps it in ``view.no_route``, logs a WARNING naming the stage
when it appears (INFO when it clears) and publishes a heartbeat at once, so upstream nodes and
sources learn within one hop: a worker then refuses new tasks (``no_route``) and a source
rejects them; tasks held meanwhile die at their deadline; service resumes by itself.

Identity: a control message must come from the peer whose PUB delivered it, an ACK from the
peer its DEALER talks to, a data message from the node its routing id names (under CURVE the
transport has bound that to the authenticated key); anything else is ``drop_impersonation``.

Input is never trusted: every malformed, unexpected or undeliverable message is counted in the
outbox's ``counters`` (written to ``<state_dir>/stats.json`` by ``status.NodeStatus``) and dropped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from typing import Callable, Dict, List, Optional

from agent.config.node import NodeConfig
from agent.protocol import wire
from agent.net.transport import (CLIENT, CONTROL, DATA, FD, HEARTBEAT_TIMEOUT_MS, LINK_DOWN,
                                 LINK_UP, REPLY, Transport, handed_over, stage_sizes)
from agent.protocol.wire import Kind, WireError
from agent.node.fleetcheck import FleetCheck
from agent.node.hooks import NodeHooks
from agent.node.limits import check_message_size
from agent.node.loop_drain import custody_left
from agent.node.neighbourtime import NeighbourSilence
from agent.node.reach import ReachWatch
from agent.node.statelog import StateLog
from agent.node.outbox import Outbox
from agent.node.peerstate import take_heartbeat
from agent.ops.state import LINK_RATES_KEY
from agent.node.role import Role
from agent.node.status import NodeStatus
from agent.policies.api import AgentPolicy, NodeView, Outgoing, first_unreachable_stage

log = logging.getLogger(__name__)


class Node:
    """One agent. ``run()`` serves until ``stop()`` (e.g. from a SIGTERM handler).

    ``outbox`` holds custody and counters, ``role`` is the source or worker side (handed the
    same outbox), ``status`` writes stats.json, ``hooks`` are systemd, metrics and saved state.
    """

    def __init__(self, cfg: NodeConfig, transport: Transport, policy: AgentPolicy, view: NodeView,
                 outbox: Outbox, role: Role, status: NodeStatus, hooks: Optional[NodeHooks] = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.cfg = cfg
        self.transport = transport
        transport.sizes = stage_sizes(view)  # a slow link's heartbeats wait for a message
        self._silence = NeighbourSilence(cfg, transport.peers.values(), transport.sizes)
        self.policy = policy
        self.view = view
        self.outbox = outbox
        self.role = role
        self.status = status
        self.hooks = hooks if hooks is not None else NodeHooks()
        self.clock = clock
        self.wall = wall
        policy.wall = wall  # one wall clock per node: DTO-EE aligns its slots to it
        self.last_heard: Dict[str, float] = {}
        self._awake_at = math.inf  # when the loop last checked it was running (note_awake)
        self._stall_grace_until = -math.inf  # a dropped data link is no neighbour gone till then
        self._changes = StateLog(clock=clock)  # connections, neighbours, routes: bounded lines
        self._fleet = FleetCheck(cfg, outbox.count, clock)  # what the fleet's nodes must share
        # no route verdict (nor unlisted-node warning) before neighbours' first heartbeats and
        # CURVE handshakes, nor within the silence that makes one gone: it may be heard no sooner
        self._grace_s = max(cfg.start_grace_s, cfg.neighbour_silence_s)
        self._reach = ReachWatch(cfg, 2 * self._grace_s)  # warns once if no peer connects to us
        self._stopping = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._wfd, False)
        self._save_due = False  # a slot's state save waits for the configuration phase's end
        self._route_from: Optional[float] = None  # end of the start-up grace (set by run)

    # -- life cycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler)."""
        self._stopping = True
        try:
            os.write(self._wfd, b"x")
        except OSError:
            pass

    def run(self) -> None:
        """Serve until ``stop()``; drain up to ``role.drain_time_s`` (``loop_drain``); stats."""
        guarded, out, role = self.outbox.guarded, self.outbox, self.role
        self.transport.register_fd(self._rfd)
        for fd in role.wake_fds():
            self.transport.register_fd(fd)
        now = self.clock()
        self._route_from = now + self._grace_s
        self.view.joining = self._silence.awaited(self.view.successors, now)
        role.start(now)
        nxt = {"hb": now, "tick": now, "status": now + self.cfg.status_interval_s,
               "flush": now + self.cfg.records_flush_interval_s,
               "slot": now + self.cfg.slot_length_s}
        drain_until = None
        while True:
            # the results the last pass finished go out before the loop sleeps, one RESULTS
            # message per source however many there were
            guarded(out.flush_results)
            now = self.clock()
            if self._stopping and drain_until is None:
                drain_until = now + role.drain_time_s
                role.stop_arrivals()
                out.current_view()  # the view's queues are as of its last refresh: now's
                log.info("stopping: %s", self.status.line())
            # custody ends with an ACK: worth waiting for only while where it went is alive
            if drain_until is not None and (now >= drain_until or not (
                    role.in_flight() or custody_left(out)[0] > 0)):
                break
            due = list(nxt.values())
            due += [t for t in (role.wake_at(), out.next_due(), drain_until) if t is not None]
            # wake often enough for the systemd watchdog even when idle
            due.append(now + self.hooks.watchdog_interval_s)
            wait_s = max(0.0, min(due) - now)
            events = self.transport.poll(wait_s)
            self.note_awake(wait_s)
            for ev in events:
                self._dispatch(ev)
            # a policy may sleep between its active periods (``next_tick_s``), but a message may
            # have started one, and held tasks are re-offered every tick_interval_s regardless
            nxt["tick"] = min(nxt["tick"], self.clock() + self._tick_gap_s(now))
            tr = self.transport
            if tr.impersonations or tr.stale_connections:  # the transport's own drops
                for reason, n in (("impersonation", tr.impersonations),
                                  ("stale_connection", tr.stale_connections)):
                    if n:
                        out.drop(reason, n)
                tr.impersonations = tr.stale_connections = 0
            guarded(out.flush_replies)
            now = self.clock()
            guarded(out.run_paced, now)
            guarded(out.run_timers, now, role.on_timer)
            role.on_clock(now)
            if now >= nxt["hb"]:
                nxt["hb"] = now + self.cfg.heartbeat_interval_s
                guarded(self._heartbeat, now)
            if now >= nxt["tick"]:
                guarded(self._tick, now)
                nxt["tick"] = now + self._tick_gap_s(now)
            if now >= nxt["slot"]:
                nxt["slot"] = now + self.cfg.slot_length_s
                guarded(self._slot, now)
            elif self._save_due:
                guarded(self._save_state)
            if now >= nxt["flush"]:
                nxt["flush"] = now + self.cfg.records_flush_interval_s
                role.flush()
            if now >= nxt["status"]:
                nxt["status"] = now + self.cfg.status_interval_s
                twins = self.transport.twins
                if twins is not None and twins.seen:  # two agents under one id (net.twins)
                    out.count("duplicate_node_id", twins.seen)
                    twins.seen = 0
                out.current_view()  # stats.json and the line give this moment's queues
                self.status.write()
                self.status.log_line(now)
                self._changes.flush()
                self.transport.security.flush_log()
            self.hooks.health(role.healthy())
        self._finish()

    def _tick_gap_s(self, now: float) -> float:
        """Seconds to the next policy tick (``AgentPolicy.next_tick_s``)."""
        if self.outbox.waiting:
            return self.policy.tick_interval_s
        return self.policy.next_tick_s(now)

    def _tick(self, now: float) -> None:
        self._publish(self.policy.on_tick(self.outbox.current_view(), now))
        self.outbox.retry_waiting(now)
        self.role.after_tick(now)

    def _finish(self) -> None:
        self.role.finish(self.clock(), self.wall())
        self._changes.flush(final=True)
        self.hooks.save_state(self._state(), force=True)
        self.outbox.current_view()  # the final stats and line: what is held at the end
        self.status.write(force=True)
        log.info("stopped: %s", self.status.line())
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- events ------------------------------------------------------------------------------

    def _dispatch(self, ev) -> None:
        tag, who, frames = ev
        if tag == FD:
            if who == self._rfd:
                with contextlib.suppress(OSError):
                    os.read(self._rfd, 4096)
            else:
                self.role.on_fd(who)
            return
        if tag == LINK_DOWN:  # its process died (or the network cut): gone now, not in 2 s
            self._changes.event("data " + who, "dropped", "data connection to %s dropped" % who)
            self.outbox.count("data_link_down")
            if who in self.view.alive and self.clock() >= self._stall_grace_until:
                self.last_heard.pop(who, None)
                self._set_alive(who, False)
            self.outbox.on_link_down(who, self.clock())
            return
        if tag == LINK_UP:  # (re)connected: the times in the log show how long a return takes
            self._changes.event("data " + who, "up", "data connection to %s up" % who)
            self.outbox.count("data_link_up")
            return
        try:
            check_message_size(frames, self.cfg.max_message_bytes)  # WireError: oversized
            if tag == CONTROL:
                _, frames = wire.split_topic(frames)
            msg = wire.decode(frames)
        except WireError as exc:
            self.outbox.reject(exc.reason, who, str(exc))
            if tag == CLIENT:  # the client waits for an answer by its task's id
                self.role.on_client_refused(who, wire.peek_id(frames), str(exc))
            return
        if tag != CLIENT and msg.sender != (who.decode("utf-8", "replace") if tag == DATA
                                            else who):
            if tag == DATA and handed_over(who) and msg.sender in self.transport.peers:
                # a peer's older connection, renamed when it connected again: what it still
                # carried is in the peer's custody and comes again on the new one
                return self.outbox.drop("stale_connection")
            # it speaks for another node (or, on the control plane, for none we know)
            return self.outbox.reject(
                "unknown_sender" if tag == CONTROL and msg.sender not in self.transport.peers
                else "impersonation", who, "it says it is %r" % msg.sender)
        try:
            if tag == CONTROL:
                self._on_control(msg)
            elif tag == REPLY:
                self._on_reply(who, msg)
            elif tag == DATA:
                self.role.on_data(who, msg)
            elif tag == CLIENT:
                self.role.on_client(who, msg)
        except Exception:  # a well-formed message that still breaks a handler: never fatal
            self.outbox.drop("handler_error")
            if self.outbox.counters["drop_handler_error"] <= 5:
                log.warning("dropped a %s message from %s after an error", msg.kind.name,
                            msg.sender, exc_info=True)

    def _on_reply(self, peer: str, msg: wire.Message) -> None:
        if msg.kind != Kind.ACK:
            return self.outbox.reject("unexpected_kind", peer, "%s, not an ACK" % msg.kind.name)
        f = msg.fields
        self.outbox.on_ack(peer, f["keys"], self.clock(), f.get("refused", ()),
                           f.get("retry_s", 0.0), f.get("reason", ""), f.get("source", ""))

    def _on_control(self, msg: wire.Message) -> None:
        if msg.sender not in self.transport.peers:
            return self.outbox.reject("unknown_sender", msg.sender, "not among the peers")
        now = self.clock()
        was_alive = msg.sender in self.view.alive
        self.last_heard[msg.sender] = now
        if msg.kind in (Kind.HEARTBEAT, Kind.QUEUE_STATE):
            why, changed = take_heartbeat(self.view, msg, self.transport.peers[msg.sender],
                                          self._fleet)
            if why:
                return self.outbox.reject("bad_heartbeat", msg.sender, why)
            if changed and was_alive:
                self._check_route(now)
        if not was_alive:
            self._set_alive(msg.sender, True)
        try:
            out = self.policy.on_control(msg, self.outbox.current_view(), now)
        except (ValueError, TypeError, KeyError) as exc:  # payload that does not fit the policy
            return self.outbox.reject("bad_payload", msg.sender, "%s: %s" % (msg.kind.name, exc))
        self._publish(out)

    # -- control -----------------------------------------------------------------------------

    def _publish(self, out: List[Outgoing]) -> None:
        for o in out or ():
            self.transport.publish(o.dest, wire.encode(o.kind, self.cfg.node_id, o.fields,
                                                       slot=o.slot, round=o.round))

    def _publish_heartbeat(self) -> None:
        self.transport.publish(wire.BROADCAST, wire.encode(
            Kind.HEARTBEAT, self.cfg.node_id, self._fleet.heartbeat(self.outbox.current_view())))

    def _heartbeat(self, now: float) -> None:
        self._publish_heartbeat()
        v = self.view
        self.hooks.gauges(v, self.policy.routing(), self.policy.thresholds())
        if self._route_from is not None and now >= self._route_from:
            self._route_from = None  # start-up grace over: neighbours had time to be heard
            self._check_route(now)
        self._reach.check(now, self.view.alive, self.transport.data_accepted)
        self.note_awake()  # a stop since the poll (in the pass's work) is no neighbour's silence
        for peer in self._silence.gone(self.view.alive, self.last_heard, now):
            self._set_alive(peer, False)
        self.view.joining = self._silence.joining(self.view.joining, now)  # then no more waits
        self.outbox.retry_waiting(now)

    def note_awake(self, waited_s: float = 0.0) -> None:
        """Called after each poll (``waited_s``: the wait the loop asked for) and before each
        liveness check. Time since the last call beyond that wait and a heartbeat interval is
        time this node did not listen (SIGSTOP, a suspended VM, a starved or very long pass):
        its neighbours' last-heard times move on by it, since a silence it did not listen
        through says nothing of them (on waking it declared every neighbour gone and its next
        stage unreachable). After such a gap longer than ZeroMQ's own heartbeat timeout, a data
        connection that drops within two heartbeat intervals (those heartbeats timed out over
        the same gap) makes no neighbour gone."""
        now = self.clock()
        unattended = now - self._awake_at - waited_s
        self._awake_at = now
        lost = unattended - self.cfg.heartbeat_interval_s
        if lost > 0:
            for peer, t in self.last_heard.items():
                self.last_heard[peer] = min(now, t + lost)
            if unattended * 1000 > HEARTBEAT_TIMEOUT_MS and now >= self._stall_grace_until:
                self._stall_grace_until = now + 2 * self.cfg.heartbeat_interval_s

    def _check_route(self, now: float) -> None:
        """Work out ``view.no_route`` again; on a change, say so and tell the neighbours now."""
        if self._route_from is not None:
            if not self.view.alive_successors(usable=False):
                return  # start-up: no successor heard yet, and the grace is not over
            self._route_from = None  # one was heard: from now on a verdict is real
        stage = first_unreachable_stage(self.view)
        if stage == self.view.no_route:
            return
        was, self.view.no_route = self.view.no_route, stage
        if stage:
            self.outbox.count("no_route")
            verb = "rejecting" if self.cfg.role == "source" else "refusing"
            self._changes.event("route", "lost", "no live route to stage %d: %s new tasks "
                                "(no_route) until one is back" % (stage, verb), logging.WARNING)
        else:
            self._changes.event("route", "back", "route to stage %d is back: accepting tasks "
                                "again" % was)
        self._publish_heartbeat()

    def _set_alive(self, peer: str, alive: bool) -> None:
        (self.view.alive.add if alive else self.view.alive.discard)(peer)
        self.view.joining.discard(peer)  # heard (or gone): no more waiting for it at start-up
        state = "alive" if alive else "gone"
        self._changes.event("neighbour " + peer, state, "neighbour %s is %s" % (peer, state))
        self.outbox.count("neighbour_joined" if alive else "neighbour_gone")
        self.hooks.metrics.neighbour_alive(peer, alive)
        self.policy.on_peers_changed(self.outbox.current_view())
        self._check_route(self.clock())
        if alive:
            self.outbox.retry_waiting(self.clock())

    def _slot(self, now: float) -> None:
        rate = self.role.slot_rate(self.cfg.slot_length_s)
        if rate is not None:  # a worker's measured phi, a client source's estimate
            self.view.arrival_rate_tasks_s = rate
        self._save_due = True
        self._save_state()

    def _state(self) -> dict:
        """What survives a restart: the policy's state and the links' measured rates."""
        return dict(self.policy.snapshot(), **{LINK_RATES_KEY: self.outbox.link_rates.table()})

    def _save_state(self) -> None:
        """Save the policy's state once per slot, but not in a configuration phase: the save
        fsyncs twice (milliseconds on a busy disk), and the loop cannot answer a round
        meanwhile, so every neighbour waiting on this node would stall with it."""
        if not self._save_due or self.policy.configuring:
            return
        self._save_due = False
        self.hooks.save_state(self._state())
