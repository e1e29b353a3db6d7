"""A node's held tasks stay in creation order, re-held ones included: MDI-Exit's output queue
O_n is FIFO (Alg. 1 puts a task at its tail, Alg. 2 offers its head), so a task a refusing
successor hands back goes back to its place among the tasks held, not behind newer ones.

A source with one stage-1 successor, a real ROUTER that refuses in real ACK messages, and the
real MDI-Exit policy."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from agent.config.node import parse_config
from agent.net import transport as T
from agent.node.build import build_view
from agent.node.capacity import Capacity
from agent.node.outbox import Outbox
from agent.node.outitem import OutItem
from agent.node.outqueue import hold
from agent.policies.mdi_exit.agent import MdiExitPolicy
from agent.protocol import wire
from agent.protocol.wire import Kind
from agent.testbed.ports import free_ports
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR

WAIT_S = 30.0  # generous: ends as soon as the message is there


@pytest.fixture
def link(tmp_path):
    """(outbox, successor ROUTER, transport, clock): source s1 with MDI-Exit and successor w1
    (alive, its data connection up); ``clock`` is a one-item list the outbox reads."""
    ctx = zmq.Context()
    ports = iter(free_ports(4))
    data = "tcp://127.0.0.1:%d" % next(ports)
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(data)
    cfg = parse_config({
        "node_id": "s1", "role": "source", "bundle": DEMO_BUNDLE_DIR, "state_dir": str(tmp_path),
        "control_bind": "tcp://127.0.0.1:%d" % next(ports),
        "data_bind": "tcp://127.0.0.1:%d" % next(ports), "ack_timeout_s": 60.0,
        "peers": [{"id": "w1", "stage": 1, "data_address": data,
                   "control_address": "tcp://127.0.0.1:%d" % next(ports)}]})
    transport = T.Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    transport.open()
    try:
        end = time.monotonic() + WAIT_S
        while not any(kind == T.LINK_UP for kind, _, _ in transport.poll(0.05)):
            assert time.monotonic() < end, "the data connection never came up"
        view = build_view(cfg, load_bundle(DEMO_BUNDLE_DIR), None)
        view.alive.add("w1")
        out = Outbox(cfg, transport, MdiExitPolicy({}, {}), view, Capacity())
        clock = [time.monotonic()]
        out.clock = lambda: clock[0]
        yield out, router, transport, clock
    finally:
        transport.close()
        router.close(linger=0)
        ctx.term()


def _task(tid: str) -> OutItem:
    fields = {"id": tid, "source": "s1", "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
              "resends": 0, "token": "0" * 16}
    return OutItem(Kind.TASK, tid, fields, np.zeros(16, dtype=np.float32), expires=1e12)


def _received(router, n: int) -> list:
    """(identity, task id) of the next ``n`` TASKs at ``router``."""
    got = []
    while len(got) < n:
        assert router.poll(int(WAIT_S * 1000)), "a TASK never came"
        frames = router.recv_multipart()
        got.append((frames[0], wire.decode(frames[1:]).fields["id"]))
    return got


def _refuse(router, identity: bytes, ids: list, out, transport, now: float) -> None:
    """w1 refuses ``ids`` (overload, hold 1 s) in one ACK; the outbox takes it as the loop
    does (``Node._on_reply``)."""
    router.send_multipart([identity] + wire.encode(Kind.ACK, "w1", {
        "keys": [], "refused": ids, "reason": "overload", "retry_s": 1.0}))
    end = time.monotonic() + WAIT_S
    while True:
        assert time.monotonic() < end, "the refusal never came"
        replies = [f for kind, _, f in transport.poll(0.05) if kind == T.REPLY]
        if replies:
            f = wire.decode(replies[0]).fields
            return out.on_ack("w1", f["keys"], now, f["refused"], f["retry_s"], f["reason"])


def _sent(out) -> int:
    return out.counters["sent_to_w1"]


def test_tasks_refused_back_rejoin_the_held_tasks_in_creation_order(link):
    """Rule: the output queue is FIFO by creation. Alg. 2 sends t1 and t2 to w1 and keeps t3
    (w1's queue, counting what was sent to it, is as long as this node's); w1 refuses t1
    (held 1 s), t4 comes, w1 refuses t2: the held tasks were [t3, t1, t4, t2] (re-held tasks
    appended at the tail) and t3 went out first once the hold ended; they must be t1..t4,
    the head t1 offered first."""
    out, router, transport, clock = link
    now = clock[0]
    tasks = {tid: _task(tid) for tid in ("t1", "t2", "t3", "t4")}
    for tid in ("t1", "t2", "t3"):
        out.send(tasks[tid], now)
    assert [tid for _, tid in _received(router, _sent(out))] == ["t1", "t2"]
    assert [i.key for i in out.waiting] == ["t3"]
    ident = b"s1"  # the DEALER names itself by its node id
    _refuse(router, ident, ["t1"], out, transport, now)
    out.send(tasks["t4"], now)
    _refuse(router, ident, ["t2"], out, transport, now)
    assert [i.key for i in out.waiting] == ["t1", "t2", "t3", "t4"]
    clock[0] = now + 1.5  # w1's hold has ended: Alg. 2 offers the head, then the next...
    before = _sent(out)
    out.retry_waiting(clock[0])
    sent = _sent(out) - before  # ... until it keeps one
    assert sent >= 1
    assert [tid for _, tid in _received(router, sent)] == ["t1", "t2", "t3", "t4"][:sent]


def test_an_item_made_later_is_younger_whichever_goes_first():
    """Rule: an item's age is fixed when it is made (``OutItem.seq``), never when it is sent
    or sent again, so re-sends and refusals cannot make a task newer than one made after it."""
    a, b = _task("a"), _task("b")
    assert a.seq < b.seq
    waiting = [b]
    hold(waiting, a)  # a made first, held after b
    assert [i.key for i in waiting] == ["a", "b"]
    c = _task("c")
    hold(waiting, c)  # the newest: at the tail
    assert [i.key for i in waiting] == ["a", "b", "c"]


def test_every_policy_gets_its_held_tasks_in_creation_order():
    """Rule: ``hold`` keeps ``waiting`` sorted by age whatever order items come in (a policy
    without ``held_in_order`` offers every held task, oldest first, too)."""
    items = [_task("x%d" % i) for i in range(40)]
    order = list(range(40))
    np.random.default_rng(3).shuffle(order)
    waiting: list = []
    for i in order:
        hold(waiting, items[i])
    assert [i.key for i in waiting] == ["x%d" % i for i in range(40)]
