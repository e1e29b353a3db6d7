"""Custody across a dead or slow link, with real ZeroMQ sockets (a ROUTER in this process per
successor): tasks sent on a connection that drops are routed again at once; a late task is not
copied onto the connection it is still on when no other successor is usable; a successor more
than ``LINK_QUEUE_MAX_S`` of link time behind is left alone, and a source then rejects new tasks
with reason ``overload`` instead of queueing them on the link."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from agent.config.node import parse_config
from agent.net import transport as T
from agent.net.links import message_wire_bytes
from agent.node.book import RecordWriter, ReplaySet, SourceBook
from agent.node.build import build_view
from agent.node.capacity import Capacity
from agent.net.liveness import LINK_QUEUE_MAX_S
from agent.node.outbox import Outbox
from agent.node.outitem import OutItem
from agent.node.source import SourceSide
from agent.policies.api import AgentPolicy
from agent.protocol.wire import Kind
from agent.testbed.ports import free_ports
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR, REPLAY_PATH

SLOW_BYTES_S = 40000.0


def _port() -> int:
    """A free loopback port below the ephemeral range (no outgoing connection takes it)."""
    return free_ports(1)[0]


def router_peers(ctx, rates):
    """({peer: bound ROUTER}, [peer config objects]): one stage-1 successor per ``rates`` entry
    (configured link bytes/s), each a real ROUTER here on a free loopback port."""
    routers, peers = {}, []
    for peer, rate in rates.items():
        data = "tcp://127.0.0.1:%d" % _port()
        r = ctx.socket(zmq.ROUTER)
        r.setsockopt(zmq.LINGER, 0)
        r.bind(data)
        routers[peer] = r
        peers.append({"id": peer, "stage": 1, "data_address": data,
                      "control_address": "tcp://127.0.0.1:%d" % _port(),
                      "link_rate_bytes_s": rate})
    return routers, peers


def connected_source(ctx, tmp_path, peers, ack_timeout_s=0.5):
    """(config, transport) of a source s1 whose ``peers`` (node-config peer tables) are given;
    its transport open, with a data connection up to every peer."""
    cfg = parse_config({
        "node_id": "s1", "role": "source", "bundle": DEMO_BUNDLE_DIR, "state_dir": str(tmp_path),
        "control_bind": "tcp://127.0.0.1:%d" % _port(),
        "data_bind": "tcp://127.0.0.1:%d" % _port(), "ack_timeout_s": ack_timeout_s,
        "peers": peers})
    transport = T.Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    transport.open()
    up, want, end = set(), {p["id"] for p in peers}, time.monotonic() + 30.0
    while up != want:
        assert time.monotonic() < end, "the data connections never came up"
        up.update(who for kind, who, _ in transport.poll(0.05) if kind == T.LINK_UP)
    return cfg, transport


def source_side(cfg, transport, tmp_path):
    """(outbox, source side) of ``cfg``'s source over ``transport``: no policy, the demo
    bundle's replay set, records under ``tmp_path``."""
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    out = Outbox(cfg, transport, AgentPolicy({}, {}), build_view(cfg, bundle, None), Capacity())
    first = bundle.stage(1)
    side = SourceSide(cfg, out, out.policy, SourceBook("s1", RecordWriter(
        str(tmp_path / "records.jsonl"))), ReplaySet(REPLAY_PATH, first.input_shape,
                                                     first.input_dtype))
    return out, side


@pytest.fixture
def node(tmp_path):
    """A source with two stage-1 successors, w1 behind a 40 KB/s link and w2 behind a fast one,
    each a real ROUTER here; the source's transport is open and connected to both."""
    ctx = zmq.Context()
    routers, peers = router_peers(ctx, {"w1": SLOW_BYTES_S, "w2": 1e7})
    cfg, transport = connected_source(ctx, tmp_path, peers)
    out, side = source_side(cfg, transport, tmp_path)
    yield out, side, routers, transport
    transport.close()
    for r in routers.values():
        r.close(linger=0)
    ctx.term()


def _task(key: str, nbytes: int = 3136) -> OutItem:
    fields = {"id": key, "source": "s1", "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
              "resends": 0, "token": "0" * 16}
    return OutItem(Kind.TASK, key, fields, np.zeros(nbytes, dtype=np.uint8))


def _received(router, wait_s: float = 10.0) -> int:
    """Messages the ROUTER gets within ``wait_s`` (stops at the first quiet 0.3 s after one)."""
    n, end = 0, time.monotonic() + wait_s
    while time.monotonic() < end:
        if router.poll(300 if n else 1000):
            router.recv_multipart()
            n += 1
        elif n:
            break
    return n


def test_a_late_task_is_not_copied_onto_the_connection_it_is_still_on(node):
    """Only w1 alive: a task past its ACK deadline on w1's connection (still up) is not sent
    again (counted held_same_link, its deadline moved on); once w2 is alive too it goes there."""
    out, _, routers, _ = node
    out.view.alive.add("w1")
    now = time.monotonic()
    out.send(_task("t1"), now)
    assert out.items["t1"].dest == "w1" and _received(routers["w1"]) == 1
    # its ACK deadline counts from when its 40 KB/s link is expected to have carried it
    later = out.items["t1"].deadline + 0.01
    assert later > now + message_wire_bytes(3136) / SLOW_BYTES_S + out.cfg.ack_timeout_s
    out.run_timers(later, lambda key, t: None)
    item = out.items["t1"]
    assert item.dest == "w1" and item.resends == 0 and out.counters["held_same_link"] == 1
    assert item.deadline > later
    assert _received(routers["w1"], 1.0) == 0  # no copy
    out.view.alive.add("w2")
    out.run_timers(item.deadline, lambda key, t: None)
    assert out.items["t1"].dest == "w2" and out.items["t1"].resends == 1
    assert _received(routers["w2"]) == 1


def test_tasks_sent_on_a_connection_that_drops_are_routed_again_at_once(node):
    """w1's ROUTER goes away: the transport reports LINK_DOWN and counts the drop; after
    on_link_down the task sent on that connection goes to w2 at once, before its ACK
    deadline."""
    out, _, routers, transport = node
    out.view.alive.add("w1")
    now = time.monotonic()
    out.send(_task("t1"), now)
    assert _received(routers["w1"]) == 1
    routers["w1"].close(linger=0)
    end = time.monotonic() + 30.0
    while transport.data_drops.get("w1", 0) == 0:
        assert time.monotonic() < end, "no LINK_DOWN after w1's socket closed"
        transport.poll(0.05)
    out.view.alive.discard("w1")  # what the loop does on LINK_DOWN
    out.view.alive.add("w2")
    t = time.monotonic()
    out.on_link_down("w1", t)
    out.run_timers(t, lambda key, t: None)
    assert out.items["t1"].dest == "w2" and t < now + out.cfg.ack_timeout_s + 30.0
    assert _received(routers["w2"]) == 1


def test_a_slow_link_a_second_behind_is_left_alone_and_the_source_rejects_with_overload(node):
    """More than LINK_QUEUE_MAX_S of w1's link time sent and not ACKed: w1 is held off
    (link_full) and, w1 being the only stage-1 successor alive, the next task waits and the
    source rejects new ones with reason overload; with less queued, w1 takes tasks."""
    out, side, routers, _ = node
    out.view.alive.add("w1")
    per_task_s = message_wire_bytes(3136) / SLOW_BYTES_S
    n = int(LINK_QUEUE_MAX_S / per_task_s)  # just within the budget
    now = time.monotonic()
    for i in range(n):
        out.send(_task("t%d" % i), now)
    assert [i.dest for i in out.items.values()] == ["w1"] * n and not out.waiting
    assert side.refusal() == ""
    out.send(_task("over"), now)  # one more: past the budget, queued on the link
    out.send(_task("held"), now)
    assert out.counters["link_full"] >= 1 and "w1" in out.view.unavailable
    assert [i.key for i in out.waiting] == ["held"]
    assert side.refusal() == "overload"
    out.on_ack("w1", ["t%d" % i for i in range(n)], now + 0.5)  # the link drained
    time.sleep(max(0.0, out.view.unavailable["w1"] - time.monotonic()) + 0.01)  # hold over
    out.run_timers(time.monotonic(), lambda key, t: None)
    assert not out.waiting and out.items["held"].dest == "w1"


def test_tasks_past_the_slowest_links_budget_on_a_fast_link_hold_nothing_off(node):
    """The bound is per link: more tasks in custody than the slow link (w1) could carry in
    LINK_QUEUE_MAX_S, all sent over the fast one (w2), leave w2 usable (the quick check on
    all tasks together only skips the per-link count when even the slowest link would do)."""
    out, side, routers, _ = node
    out.view.alive.add("w2")
    n = int(LINK_QUEUE_MAX_S * SLOW_BYTES_S / message_wire_bytes(3136)) + 5
    now = time.monotonic()
    for i in range(n):
        out.send(_task("t%d" % i), now)
    assert out.items.task_wire_bytes > SLOW_BYTES_S * LINK_QUEUE_MAX_S
    assert [i.dest for i in out.items.values()] == ["w2"] * n and not out.waiting
    assert out.counters["link_full"] == 0 and "w2" not in out.view.unavailable


def test_a_source_holding_max_queue_tasks_unacked_rejects_with_overload(node):
    """Tasks sent and not ACKed count toward max_queue_tasks like tasks waiting for a
    successor: at the limit a new task is rejected (overload), not queued."""
    out, side, _, _ = node
    out.view.alive.add("w2")
    now = time.monotonic()
    for i in range(out.cfg.max_queue_tasks):
        out.send(_task("t%d" % i), now)
    assert not out.waiting and out.held()[0] == out.cfg.max_queue_tasks
    assert side.refusal() == "overload"


class _Failing(AgentPolicy):
    """A policy whose routing raises (a bug, or inputs it cannot handle)."""

    def choose_successor(self, task, view, exclude=()):
        raise ValueError("cannot route")


def test_a_policy_that_fails_to_route_leaves_the_task_waiting_counted(node):
    """Rule: an error in the policy's choose_successor never loses a task: each one waits in
    the outbox (counted ``routing_error``), and is routed once the policy works again (the
    held tasks were lost from ``retry_waiting`` after the first error)."""
    out, _, routers, _ = node
    real = out.policy
    out.policy = _Failing({}, {})
    out.view.alive.update({"w1", "w2"})
    for i in range(3):
        out.send(_task("t%d" % i), time.monotonic())
    assert len(out.waiting) == 3 and out.counters["routing_error"] == 3
    out.retry_waiting(time.monotonic())
    assert len(out.waiting) == 3 and out.counters["routing_error"] == 6
    out.policy = real
    out.retry_waiting(time.monotonic())
    assert not out.waiting and len(out.items) == 3
