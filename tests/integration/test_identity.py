"""Identities bound to keys, with real agent processes under CURVE.

Rules checked: a process holding a listed key (node ``w1b``'s) gets no message accepted when it
claims another node's id, either as its routing id or in the header's ``from``; RESULTs it
forges are never recorded; a TASK it replays with higher ``attempt`` values runs at most once,
and an ``attempt`` beyond ``max_attempts`` is refused.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import pytest
import zmq

from agent.net.security import CurveSecurity, generate_keypair, load_secret_key_file
from agent.protocol import wire
from agent.protocol.wire import Kind
from engines.bundle import load_bundle
from tests.integration.agent_cluster import Cluster, build_two_stage_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def test_a_listed_key_cannot_speak_for_another_node(bundle, tmp_path):
    """w1b's key (listed everywhere, its agent not running) claiming s1 or w1: 0 accepted;
    forged RESULTs: 0 recorded; a TASK in its own name, any attempt, runs nowhere: w1b is not
    among w2's peers (unknown_sender; replays from a peer: test_node_worker)."""
    nodes = {"s1": 0, "w1": 1, "w2": 2}
    keydir = str(tmp_path / "keys")
    keys = {}
    for n in list(nodes) + ["w1b"]:
        public_file, _ = generate_keypair(keydir, n)
        keys[n] = load_secret_key_file(public_file + "_secret")
    c = Cluster(str(tmp_path), bundle, nodes, policy="cf", max_attempts=3)

    def secure(node):
        peers = tuple(dataclasses.replace(p, public_key=keys[p.id][0].decode())
                      for p in c.config(node).peers)
        return dict(security="curve", peers=peers, allowed_keys_dir=keydir,
                    secret_key_path=os.path.join(keydir, node + ".key_secret"),
                    public_key_path=os.path.join(keydir, node + ".key"))

    ctx = zmq.Context()
    rogue = CurveSecurity(*keys["w1b"], allowed_public_keys=[keys["w2"][0]])
    socks = []

    def dealer(routing_id: bytes, node: str):
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.setsockopt(zmq.ROUTING_ID, routing_id)
        rogue.apply_client(d, keys[node][0])
        d.connect(c.config(node).data_bind)
        socks.append(d)
        return d

    spec = load_bundle(bundle).stage(2)
    x = np.zeros(spec.input_shape, dtype=spec.input_dtype)

    def task(sender, tid, attempt=0):
        return wire.encode(Kind.TASK, sender, {
            "id": tid, "source": "s1", "stage": 2, "attempt": attempt, "created": time.time(),
            "hops": 1, "resends": 0, "ttl_s": 10.0, "token": "guess"}, [x])

    def result(sender, tid):
        return wire.encode(Kind.RESULT, sender, {
            "id": tid, "attempt": 0, "source": "s1", "exit_stage": 2, "cls": 1,
            "confidence": 0.99, "worker": sender, "hops": 2, "resends": 0, "created": 0.0,
            "token": "guess"})

    try:
        for n in ("w2", "w1", "s1"):
            c.start(n, **secure(n), **({"arrival_rate_tasks_s": 20.0, "max_tasks": 10}
                                       if n == "s1" else {}))
        c.wait_for(lambda: c.finished("s1", 10), 120, "10 tasks answered over CURVE")
        as_s1 = dealer(b"s1", "w2")  # routing id of another node: dropped by the transport
        own = dealer(b"w1b", "w2")  # its own routing id: another node in the header, or replays
        to_s1 = dealer(b"w1b", "s1")
        time.sleep(1.0)  # CURVE handshakes
        for i in range(10):
            as_s1.send_multipart(task("s1", "claim-%d" % i))
            own.send_multipart(task("w1", "from-%d" % i))
            to_s1.send_multipart(result("w2", "s1-%016x" % i))  # another node in the header
            to_s1.send_multipart(result("w1b", "s1-%016x" % i))  # an id it cannot know
        for attempt in (0, 1, 2, 9):
            own.send_multipart(task("w1b", "replayed", attempt))
        c.wait_for(lambda: c.counters("w2").get("drop_impersonation", 0) >= 20, 60,
                   "20 impersonations at w2")
        c.wait_for(lambda: c.counters("w2").get("drop_unknown_sender", 0) >= 4, 60,
                   "4 TASKs from a non-peer refused")
        c.wait_for(lambda: c.counters("s1").get("drop_impersonation", 0) >= 10, 60,
                   "10 impersonations at s1")
        time.sleep(1.0)  # anything still on its way lands
        w2, s1 = c.counters("w2"), c.counters("s1")
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
        c.stop_all()
    recs = c.records("s1")
    at_w2 = sum(1 for r in recs if r["exit_stage"] == 2)  # the source's tasks that reached w2
    assert w2.get("tasks_in", 0) == at_w2, "no TASK of w1b ran"
    assert w2.get("duplicate_task", 0) == 0 and w2["drop_unknown_sender"] == 4
    assert w2["drop_impersonation"] == 20
    assert len(recs) == 10 and all(r["status"] == "completed" for r in recs)
    assert not {r["id"] for r in recs} & ({"replayed"} | {"s1-%016x" % i for i in range(10)})
    assert s1.get("drop_impersonation", 0) == 10
