"""A task waiting for its emulated link's slot is sent once, by its latest route.

With ``emulate_links`` each message waits in the outbox for its link's slot. A task whose
successor's data connection drops while it waits is routed again at once (to the other
successor, on that link's own schedule). Only that send goes: the first route's slot, when it
comes, sends nothing (it sent the task then too, to the new successor, ahead of that link's
pacing, and the new slot sent a second copy). A source's outbox with real sockets: each
successor is a ROUTER in this process, connected.

Also: ``resends`` counts re-sends made; a task given up after ``MAX_HOP_RESENDS``
(``drop_undeliverable``) is not one more.
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
from agent.node.outbox import MAX_HOP_RESENDS, Outbox
from agent.node.outitem import OutItem
from agent.policies.api import AgentPolicy
from agent.protocol.wire import Kind
from agent.testbed.ports import free_ports
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.built_worker import built_worker

RATE_BYTES_S = 20000.0
TASK_BYTES = 30000  # ~1.5 s on the link


def _received(router, wait_s: float) -> int:
    """Messages the ROUTER gets within ``wait_s`` of quiet."""
    n = 0
    while router.poll(int(wait_s * 1000)):
        router.recv_multipart()
        n += 1
    return n


@pytest.fixture
def paced(tmp_path):
    """(outbox, {peer: ROUTER}, transport): source s1 with emulated links to stage-1
    successors w1 and w2 (both alive), its data connections up."""
    ctx = zmq.Context()
    ports = iter(free_ports(6))  # two successors' data and control, the source's two binds
    routers, peers = {}, []
    for peer in ("w1", "w2"):
        data = "tcp://127.0.0.1:%d" % next(ports)
        r = ctx.socket(zmq.ROUTER)
        r.setsockopt(zmq.LINGER, 0)
        r.bind(data)
        routers[peer] = r
        peers.append({"id": peer, "stage": 1, "data_address": data,
                      "control_address": "tcp://127.0.0.1:%d" % next(ports),
                      "link_rate_bytes_s": RATE_BYTES_S})
    cfg = parse_config({
        "node_id": "s1", "role": "source", "bundle": DEMO_BUNDLE_DIR, "state_dir": str(tmp_path),
        "control_bind": "tcp://127.0.0.1:%d" % next(ports),
        "data_bind": "tcp://127.0.0.1:%d" % next(ports), "ack_timeout_s": 0.5,
        "emulate_links": True, "peers": peers})
    transport = T.Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    transport.open()
    try:
        up, end = set(), time.monotonic() + 30.0
        while up != set(routers):
            assert time.monotonic() < end, "the data connections never came up"
            up.update(who for kind, who, _ in transport.poll(0.05) if kind == T.LINK_UP)
        view = build_view(cfg, load_bundle(DEMO_BUNDLE_DIR), None)
        view.alive.update(routers)
        yield Outbox(cfg, transport, AgentPolicy({}, {}), view, Capacity()), routers, transport
    finally:
        transport.close()
        for r in routers.values():
            r.close(linger=0)
        ctx.term()


def _task(key: str) -> OutItem:
    fields = {"id": key, "source": "s1", "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
              "resends": 0, "token": "0" * 16}
    return OutItem(Kind.TASK, key, fields, np.zeros(TASK_BYTES, dtype=np.uint8), expires=1e9)


def test_a_paced_task_routed_again_after_its_link_dropped_goes_once_at_the_new_links_slot(
        paced):
    """Rule: a task re-routed while it waited for its paced slot is sent once, to its new
    successor, at that link's slot; the first link's slot sends nothing."""
    out, routers, transport = paced
    transfer_s = message_wire_bytes(TASK_BYTES) / RATE_BYTES_S
    item = _task("t1")
    t0 = 1000.0
    out.send(item, t0)
    first = item.dest
    second = {"w1": "w2", "w2": "w1"}[first]
    # its successor's data connection drops before the link's slot for it has come
    down_at = t0 + 0.5 * transfer_s
    transport.data_drops[first] = transport.data_drops.get(first, 0) + 1
    out.view.alive.discard(first)
    out.on_link_down(first, down_at)
    out.run_timers(down_at, lambda key, now: None)
    assert item.dest == second and out.counters["resends"] == 1

    out.run_paced(t0 + 1.01 * transfer_s)  # the first link's slot: nothing goes
    assert _received(routers[second], 0.5) == 0
    assert _received(routers[first], 0.2) == 0
    assert list(out.items) == ["t1"]

    out.run_paced(down_at + 1.01 * transfer_s)  # the second link's own slot
    assert _received(routers[second], 1.0) == 1
    out.run_paced(down_at + 100.0)  # nothing else was left queued for the task
    assert _received(routers[second], 0.3) == 0 and not out._paced


def test_resends_counts_only_the_resends_made_before_a_task_is_given_up(tmp_path):
    """Rule: a task whose every send fails is sent 1 + MAX_HOP_RESENDS times, then dropped
    (``drop_undeliverable``); ``resends`` equals the re-sends made, not one more."""
    built = built_worker(str(tmp_path), "w1a", ack_timeout_s=1.0)
    try:
        out = built.node.outbox
        sends = []
        built.transport.send = lambda peer, frames: sends.append(peer) and False
        out.view.alive.update(p.id for p in built.node.cfg.peers)
        fields = {"id": "t1", "source": "s1", "stage": 2, "attempt": 0, "created": 0.0,
                  "hops": 1, "resends": 0, "token": "0" * 16}
        out.send(OutItem(Kind.TASK, "t1#0", fields, np.zeros((1, 8, 14, 14), np.float32),
                         expires=1e9), 100.0)
        now = 100.0
        while out.items and now < 200.0:
            now += 0.01
            out.run_timers(now, lambda key, t: None)
        assert out.counters["drop_undeliverable"] == 1 and not out.items
        assert len(sends) == 1 + MAX_HOP_RESENDS
        assert out.counters["resends"] == len(sends) - 1
    finally:
        built.close()
