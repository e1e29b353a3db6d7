"""An ACK deadline counts from when the link is expected to have carried the task.

On a link the sender does not pace (a kernel-shaped or real network) a task handed to the socket
is on the wire for its wire bytes over the link's rate, behind what was handed over before it.
Its ACK deadline is ``ack_timeout_s`` after that expected end (``agent.node.linkclock``), at the
rate the view plans with; a link of unknown rate keeps ``ack_timeout_s`` from the send. On a
paced link a task whose deadline passes while it waits for its slot is dropped, not sent.
A source's outbox with real sockets: each successor is a ROUTER in this process, connected.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from agent.config.node import parse_config
from agent.net import transport as T
from agent.net.links import message_wire_bytes
from agent.node.build import build_view
from agent.node.capacity import Capacity
from agent.node.outbox import Outbox
from agent.node.outitem import OutItem
from agent.policies.api import AgentPolicy
from agent.protocol.wire import Kind
from agent.testbed.ports import free_ports
from tests.unit.test_outbox_liveness import _received, router_peers
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR

ACK_S = 0.5
SLOW_BYTES_S = 20000.0  # a 30 KB task takes ~1.6 s, three times ACK_S
TASK_BYTES = 30000


def _port() -> int:
    return free_ports(1)[0]


@pytest.fixture
def make(tmp_path):
    """make({peer: configured bytes/s}, emulate_links) -> (outbox, {peer: ROUTER}): a source
    whose stage-1 successors are ROUTERs here, its transport open and connected to each."""
    made = []

    def build(rates, emulate=False):
        ctx = zmq.Context()
        routers, peers = router_peers(ctx, rates)
        cfg = parse_config({
            "node_id": "s1", "role": "source", "bundle": DEMO_BUNDLE_DIR,
            "state_dir": str(tmp_path), "control_bind": "tcp://127.0.0.1:%d" % _port(),
            "data_bind": "tcp://127.0.0.1:%d" % _port(), "ack_timeout_s": ACK_S,
            "emulate_links": emulate, "peers": peers})
        transport = T.Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
        made.append((ctx, transport, routers))
        transport.open()
        up, end = set(), time.monotonic() + 30.0
        while up != set(rates):
            assert time.monotonic() < end, "the data connections never came up"
            up.update(who for kind, who, _ in transport.poll(0.05) if kind == T.LINK_UP)
        view = build_view(cfg, load_bundle(DEMO_BUNDLE_DIR), None)
        return Outbox(cfg, transport, AgentPolicy({}, {}), view, Capacity()), routers

    yield build
    for ctx, transport, routers in made:
        transport.close()
        for r in routers.values():
            r.close(linger=0)
        ctx.term()


def _task(key: str, nbytes: int = TASK_BYTES, expires: float = 0.0) -> OutItem:
    fields = {"id": key, "source": "s1", "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
              "resends": 0, "token": "0" * 16}
    return OutItem(Kind.TASK, key, fields, np.zeros(nbytes, dtype=np.uint8), expires=expires)


def _transfer_s(nbytes: int = TASK_BYTES, rate: float = SLOW_BYTES_S) -> float:
    return message_wire_bytes(nbytes) / rate


def test_a_task_on_a_slow_link_is_not_resent_before_its_transfer_can_have_ended(make):
    """Rule: a task whose transfer (wire bytes over the link's configured rate) takes longer
    than ack_timeout_s is not re-sent until ack_timeout_s after that transfer's expected end,
    though another successor is usable; its first send's ACK then times the link."""
    out, routers = make({"w1": SLOW_BYTES_S, "w2": 1e7})
    out.view.alive.add("w1")
    t0 = 1000.0
    item = _task("t1")
    out.send(item, t0)
    assert item.dest == "w1" and _received(routers["w1"]) == 1
    out.view.alive.add("w2")  # somewhere else a re-send could go
    end = t0 + _transfer_s()
    assert end - t0 > 3 * ACK_S
    assert item.deadline == pytest.approx(end + ACK_S)
    for t in (t0 + ACK_S + 0.01, end, end + ACK_S - 0.01):
        out.run_timers(t, lambda key, now: None)
        assert out.items["t1"] is item and item.dest == "w1" and item.resends == 0
    assert out.counters["resends"] == 0 and _received(routers["w2"], 0.5) == 0
    acked = end + 0.1
    out.on_ack("w1", ["t1"], acked)
    assert out.items == {} and out.counters["acked"] == 1
    assert out.link_rates.fastest_recent("w1") == pytest.approx(
        message_wire_bytes(TASK_BYTES) / (acked - t0))


def test_a_task_without_its_ack_by_then_is_resent_and_the_resend_waits_for_its_own_link(make):
    """Rule: once ack_timeout_s past the expected end has gone by with no ACK, the task is
    re-sent to another successor, and the re-send's deadline counts from when that link is
    expected to have carried it (here the slow one)."""
    out, routers = make({"w1": SLOW_BYTES_S, "w2": 1e7})
    out.view.alive.add("w2")
    t0 = 1000.0
    item = _task("t1")
    out.send(item, t0)
    assert item.dest == "w2" and _received(routers["w2"]) == 1
    fast_end = t0 + _transfer_s(rate=1e7)
    assert item.deadline == pytest.approx(fast_end + ACK_S)
    out.view.alive.add("w1")
    t1 = item.deadline + 0.01
    out.run_timers(t1, lambda key, now: None)
    assert item.dest == "w1" and item.resends == 1 and out.counters["resends"] == 1
    assert _received(routers["w1"]) == 1
    assert item.deadline == pytest.approx(t1 + _transfer_s() + ACK_S)


def test_tasks_queued_on_a_link_are_expected_one_after_another_and_an_ack_moves_that_back(
        make):
    """Rule: a task handed to a link still carrying an earlier one is expected after it (the
    link serialises them); an ACK earlier than expected brings the link's expected end back to
    the ACK time plus what was expected behind the ACKed task; a dropped connection clears it."""
    out, routers = make({"w1": SLOW_BYTES_S})
    out.view.alive.add("w1")
    small = 8000  # two of them are under a second of link time: the link is not held
    per_s = _transfer_s(small)
    t0 = 1000.0
    a, b = _task("a", small), _task("b", small)
    out.send(a, t0)
    out.send(b, t0 + 0.01)
    assert _received(routers["w1"]) == 2
    assert (a.link_end, b.link_end) == (pytest.approx(t0 + per_s), pytest.approx(t0 + 2 * per_s))
    assert b.deadline == pytest.approx(t0 + 2 * per_s + ACK_S)
    out.on_ack("w1", ["a"], t0 + 0.1)  # the link is faster than configured
    c = _task("c", small)
    out.send(c, t0 + 0.1)
    assert c.link_end == pytest.approx(t0 + 0.1 + per_s + per_s)  # behind b, b from the ACK
    out.on_link_down("w1", t0 + 0.2)
    d = _task("d", small)
    out.send(d, t0 + 0.2)
    assert d.link_end == pytest.approx(t0 + 0.2 + per_s)


def test_a_link_of_unknown_rate_keeps_the_deadline_from_the_send(make):
    """Rule: with no rate for the link (configured 0, nothing measured) the ACK deadline is
    ack_timeout_s after the send, whatever the task's size."""
    out, routers = make({"w3": 0.0})
    out.view.alive.add("w3")
    item = _task("t1", 200000)
    out.send(item, 1000.0)
    assert _received(routers["w3"]) == 1
    assert item.deadline == pytest.approx(1000.0 + ACK_S)


def test_a_paced_task_whose_deadline_passes_while_it_waits_is_dropped_not_sent(make):
    """Rule: on an emulated (paced) link, a task whose deadline has passed when its slot
    comes is dropped and counted ``drop_deadline`` (its receiver would drop it on arrival);
    one still within its deadline is sent."""
    out, routers = make({"w1": SLOW_BYTES_S}, emulate=True)
    out.view.alive.add("w1")
    t0 = 1000.0
    late = _task("late", expires=t0 + 0.5 * _transfer_s())
    on_time = _task("on_time", 100, expires=t0 + 10 * _transfer_s())
    out.send(late, t0)
    out.send(on_time, t0)
    assert out.held()[0] == 2 and out.counters["drop_deadline"] == 0
    out.run_paced(t0 + 3 * _transfer_s())
    assert out.counters["drop_deadline"] == 1
    assert list(out.items) == ["on_time"] and out.held()[0] == 1
    assert _received(routers["w1"]) == 1  # only the task still within its deadline
