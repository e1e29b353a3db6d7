"""Held tasks offered head first (MDI-Exit's Alg. 2) and refusals about one source's tasks: a
task kept because every usable successor of its stage refuses its source's tasks alone holds
back that source's later tasks of the stage, not another source's; a task kept for any other
reason still ends its stage's offers.

The last test runs a stage-1 worker's real outbox with the real MDI-Exit policy, a real ROUTER
as its stage-2 successor and refusals in real ACK messages."""

from __future__ import annotations

import time
from typing import List

import numpy as np
import pytest
import zmq

from agent.config.node import parse_config
from agent.net import transport as T
from agent.node.build import build_view
from agent.node.capacity import Capacity
from agent.node.outbox import Outbox
from agent.node.outitem import OutItem
from agent.node.outqueue import hold, reoffer
from agent.node.refusal_scope import SourceHolds, kept_for_source
from agent.policies.mdi_exit.agent import MdiExitPolicy
from agent.protocol import wire
from agent.protocol.ack import ack_fields
from agent.protocol.wire import Kind
from agent.testbed.ports import free_ports
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR

WAIT_S = 30.0  # generous: each wait ends as soon as the message is there


def _task(tid: str, source: str, stage: int = 2) -> OutItem:
    fields = {"id": tid, "source": source, "stage": stage, "attempt": 0, "created": 0.0,
              "hops": 0, "resends": 0, "token": "0" * 16}
    return OutItem(Kind.TASK, tid, fields, np.zeros(16, dtype=np.float32), expires=1e12)


class _Routing:
    """``Outbox.send`` as ``reoffer`` sees it: tasks of ``keep`` sources go back among the held
    ones, the others leave; ``offered`` lists every task offered, in order."""

    def __init__(self, waiting: List[OutItem], keep: set):
        self.waiting, self.keep, self.offered = waiting, keep, []

    def __call__(self, item: OutItem, now: float, again: bool) -> None:
        self.offered.append(item.key)
        if item.fields["source"] in self.keep:
            hold(self.waiting, item)


def _held(*specs) -> List[OutItem]:
    waiting: List[OutItem] = []
    for spec in specs:
        hold(waiting, _task(*spec))
    return waiting


def test_a_task_kept_for_its_source_alone_holds_back_only_that_sources_later_tasks():
    """Rule: head first, a keep scoped to source s1 ends the offers of s1's tasks of the stage
    (a2 is not offered ahead of a1) while s2's tasks behind it are offered, oldest first."""
    waiting = _held(("a1", "s1"), ("b1", "s2"), ("a2", "s1"), ("b2", "s2"))
    send = _Routing(waiting, {"s1"})
    reoffer(waiting, send, 0.0, True, lambda it: it.fields["source"] == "s1")
    assert send.offered == ["a1", "b1", "b2"]
    assert [i.key for i in waiting] == ["a1", "a2"]


def test_a_task_kept_for_every_source_still_ends_its_stages_offers():
    """Rule: head first, a keep not scoped to one source (Alg. 2 kept the head, or nothing is
    usable) ends the stage's offers: no later task, of any source, passes the head."""
    waiting = _held(("a1", "s1"), ("b1", "s2"), ("a2", "s1"))
    send = _Routing(waiting, {"s1", "s2"})
    reoffer(waiting, send, 0.0, True, lambda it: False)
    assert send.offered == ["a1"]
    reoffer(waiting, send, 0.0, True)  # no scope told: every keep is the stage's
    assert send.offered == ["a1", "a1"]
    assert [i.key for i in waiting] == ["a1", "b1", "a2"]


def test_another_sources_task_kept_after_a_scoped_keep_ends_the_stage():
    """Rule: once s1's head is kept for s1 alone, the first of s2's tasks kept (for every
    source) ends the stage's offers: tasks of a third source behind it wait too; another
    stage's tasks are offered as before."""
    waiting = _held(("a1", "s1"), ("b1", "s2"), ("c1", "s3"), ("x1", "s3", 3))
    send = _Routing(waiting, {"s1", "s2"})
    reoffer(waiting, send, 0.0, True, lambda it: it.fields["source"] == "s1")
    assert send.offered == ["a1", "b1", "x1"]
    assert [i.key for i in waiting] == ["a1", "b1", "c1"]


def test_without_head_first_every_held_task_is_offered_whatever_the_scope():
    """Rule: a policy without ``held_in_order`` gets every held task offered each time."""
    waiting = _held(("a1", "s1"), ("a2", "s1"), ("b1", "s2"))
    send = _Routing(waiting, {"s1", "s2"})
    reoffer(waiting, send, 0.0, False, lambda it: True)
    assert send.offered == ["a1", "a2", "b1"]


@pytest.fixture
def worker(tmp_path):
    """(outbox, successor ROUTER, transport): stage-1 worker w1 of sources s1 and s2 with
    MDI-Exit; its stage-2 successor w2 (alive, its data connection up) is the ROUTER."""
    ctx = zmq.Context()
    ports = iter(free_ports(9))
    data = "tcp://127.0.0.1:%d" % next(ports)
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(data)

    def peer(pid: str, stage: int) -> dict:
        return {"id": pid, "stage": stage, "control_address": "tcp://127.0.0.1:%d" % next(ports),
                "data_address": data if pid == "w2" else "tcp://127.0.0.1:%d" % next(ports)}

    cfg = parse_config({
        "node_id": "w1", "role": "worker", "stage": 1, "bundle": DEMO_BUNDLE_DIR,
        "state_dir": str(tmp_path), "control_bind": "tcp://127.0.0.1:%d" % next(ports),
        "data_bind": "tcp://127.0.0.1:%d" % next(ports), "ack_timeout_s": 60.0,
        "peers": [peer("s1", 0), peer("s2", 0), peer("w2", 2)]})
    transport = T.Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    transport.open()
    try:
        end = time.monotonic() + WAIT_S
        while not any(kind == T.LINK_UP for kind, _, _ in transport.poll(0.05)):
            assert time.monotonic() < end, "the data connection never came up"
        view = build_view(cfg, load_bundle(DEMO_BUNDLE_DIR), None)
        view.alive.update(("s1", "s2", "w2"))
        yield Outbox(cfg, transport, MdiExitPolicy({}, {}), view, Capacity()), router, transport
    finally:
        transport.close()
        router.close(linger=0)
        ctx.term()


def _received(router) -> tuple:
    """(identity, task id) of the next TASK at ``router``."""
    assert router.poll(int(WAIT_S * 1000)), "a TASK never came"
    frames = router.recv_multipart()
    return frames[0], wire.decode(frames[1:]).fields["id"]


def _refuse(router, identity: bytes, key: str, out, transport, now: float, **scope) -> None:
    """w2 refuses ``key`` (no route, hold 1 s; about ``scope``'s source alone when named) in a
    real ACK; the outbox takes it as the loop does."""
    router.send_multipart([identity] + wire.encode(
        Kind.ACK, "w2", ack_fields([key], "no_route", 1.0, **scope)))
    end = time.monotonic() + WAIT_S
    while True:
        assert time.monotonic() < end, "the refusal never came"
        replies = [f for kind, _, f in transport.poll(0.05) if kind == T.REPLY]
        if replies:
            f = wire.decode(replies[0]).fields
            return out.on_ack("w2", f["keys"], now, f["refused"], f["retry_s"], f["reason"],
                              f.get("source", ""))


def test_mdi_exit_worker_sends_another_sources_task_past_one_held_for_its_source(worker):
    """Rule: under MDI-Exit, s1's task a1 held because w2, its only successor, refuses s1's
    tasks alone does not stall s2's tasks: s2's b1, made after a1, goes to w2 while a1 stays
    the head of s1's held tasks and s1's later a2 does not pass it."""
    out, router, transport = worker
    now = time.monotonic()
    a1, a2, b1 = _task("a1", "s1"), _task("a2", "s1"), _task("b1", "s2")
    out.send(a1, now)
    ident, tid = _received(router)
    assert tid == "a1"
    _refuse(router, ident, "a1", out, transport, now, source="s1")
    assert [i.key for i in out.waiting] == ["a1"] and "w2" not in out.view.unavailable
    assert kept_for_source(out.source_holds, out.current_view(), "s1", 2, now)
    out.send(b1, now)
    out.send(a2, now)
    assert [i.key for i in out.waiting] == ["a1", "a2"]
    assert out.counters["sent_to_w2"] == 2  # a1 once, then b1
    assert _received(router)[1] == "b1"


def test_a_keep_is_for_one_source_only_while_every_usable_successor_refuses_it_alone(
        tmp_path):
    """Rule: ``kept_for_source`` is true only when the stage has usable successors and each is
    held off for that source's tasks alone: not with one free for it, not for another source,
    not when none is usable (held off for every task, or gone)."""
    ports = iter(free_ports(10))
    cfg = parse_config({
        "node_id": "w1", "role": "worker", "stage": 1, "bundle": DEMO_BUNDLE_DIR,
        "state_dir": str(tmp_path), "control_bind": "tcp://127.0.0.1:%d" % next(ports),
        "data_bind": "tcp://127.0.0.1:%d" % next(ports),
        "peers": [{"id": p, "stage": s, "control_address": "tcp://127.0.0.1:%d" % next(ports),
                   "data_address": "tcp://127.0.0.1:%d" % next(ports)}
                  for p, s in (("s1", 0), ("s2", 0), ("w2a", 2), ("w2b", 2))]})
    view = build_view(cfg, load_bundle(DEMO_BUNDLE_DIR), None)
    view.alive.update(("w2a", "w2b"))
    holds = SourceHolds()
    assert not kept_for_source(holds, view, "s1", 2, 0.0)
    holds.hold("w2a", "s1", 10.0, "no_route")
    assert not kept_for_source(holds, view, "s1", 2, 0.0)  # w2b takes s1's tasks
    holds.hold("w2b", "s1", 5.0, "no_route")
    assert kept_for_source(holds, view, "s1", 2, 0.0)
    assert not kept_for_source(holds, view, "s2", 2, 0.0)
    assert not kept_for_source(holds, view, "s1", 2, 6.0)  # w2b's hold has ended
    view.unavailable["w2b"] = 20.0  # held off for every task: w2a is the only usable one
    assert kept_for_source(holds, view, "s1", 2, 6.0)
    view.unavailable["w2a"] = 20.0
    assert not kept_for_source(holds, view, "s1", 2, 6.0)  # nothing usable: every source waits
