"""Garbage on live agents' sockets while real tasks flow: counted, logged briefly, nothing lost.

Agents run as real processes (source s1 with a client socket, workers w1 and w2) over real
ZeroMQ; node ``fz`` is a listed stage-1 peer whose addresses the test binds itself, so it
speaks on the control plane as a neighbour that went bad would.
"""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from agent.protocol import wire
from agent.protocol.text import DETAIL_MAX_CHARS
from agent.protocol.wire import Kind
from agent.testbed.ports import free_ports
from tests.integration.agent_cluster import Cluster, build_two_stage_bundle

FORGED = "2026-01-01 00:00:00,000 INFO agent.run: forged line"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _heartbeat(role: str) -> list:
    h = {"v": wire.VERSION, "k": int(Kind.HEARTBEAT), "from": "fz", "slot": 0, "round": 0,
         "t": [], "role": role, "stage": 1, "capacity_flops": 1e9, "input_queue": 0,
         "output_queue": 0, "service_time_s": 0.01}
    return [wire.topic(wire.BROADCAST), msgpack.packb(h, use_bin_type=True)]


def _drops(c, node, reason):
    return (c.stats(node) or {}).get("counters", {}).get("drop_" + reason, 0)


def test_headers_quoting_60_KB_strings_or_escape_codes_give_short_clean_lines_and_answers(
        bundle, tmp_path):
    """Rule: bad input gets one clear, bounded, printable log line and is counted; nothing
    real is lost. A client's TASK whose dtype is 20,000 zero bytes is answered ``error`` with a
    short detail the client can decode (quoted whole: an 80 KB answer header the client refused
    as oversized); a header whose version is a 60 KB string is one short line at w1, not a
    60 KB one; a listed peer's heartbeat whose role holds escape codes, a newline and a forged
    log line is counted ``drop_bad_heartbeat`` and its line carries none of them. Five real
    tasks sent alongside all complete."""
    port = free_ports(1)[0]
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2, "fz": 1})
    ctx = zmq.Context()
    socks = []

    def sock(kind):
        s = ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        socks.append(s)
        return s

    try:
        c.start("w1")
        c.start("w2")
        c.start("s1", arrival="client", client_bind="tcp://127.0.0.1:%d" % port)
        fz_pub = sock(zmq.PUB)
        fz_pub.bind(c.config("fz").control_bind)
        c.wait_for(lambda: c.alive_at("s1", ["w1"]) and c.alive_at("w1", ["w2"]), 90,
                   "the fleet to hear each other")
        client = sock(zmq.DEALER)
        client.connect("tcp://127.0.0.1:%d" % port)
        fields = {"source": "me", "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
                  "resends": 0}
        bad = wire.encode(Kind.TASK, "cam", dict(fields, id="bad"),
                          [np.zeros((1, 1, 8, 8), np.float32)])
        head = msgpack.unpackb(bad[0], raw=False)
        head["t"] = [["\x00" * 20000, [1, 1, 8, 8]]]
        client.send_multipart([msgpack.packb(head, use_bin_type=True), bytes(bad[1])])
        for i in range(5):
            x = np.full((1, 1, 8, 8), i / 5.0, np.float32)
            client.send_multipart(wire.encode(Kind.TASK, "cam", dict(fields, id="q%d" % i), [x]))
        junk = sock(zmq.DEALER)
        junk.setsockopt(zmq.ROUTING_ID, b"s1")
        junk.connect(c.config("w1").data_bind)
        junk.send_multipart([msgpack.packb({"v": "A" * 60000, "k": 10}, use_bin_type=True)])
        role = "\x1b[2J\n" + FORGED + "x" * 60000

        def heartbeat_dropped():
            fz_pub.send_multipart(_heartbeat(role))  # a PUB drops what it sends unconnected
            return _drops(c, "s1", "bad_heartbeat") >= 1 and _drops(c, "w1", "bad_version") >= 1
        c.wait_for(heartbeat_dropped, 90, "the heartbeat and the junk header counted")
        got = {}
        poller = zmq.Poller()
        poller.register(client, zmq.POLLIN)
        while len(got) < 6 and poller.poll(60000):
            msg = wire.decode(client.recv_multipart())
            got[msg.fields["id"]] = msg
        c.wait_for(lambda: len(c.records("s1")) >= 5, 60, "5 records")
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
        c.stop_all()
    assert sorted(got) == ["bad"] + ["q%d" % i for i in range(5)]
    answer = got.pop("bad").fields
    assert (answer["outcome"], answer["reason"]) == ("error", "bad_input")
    assert answer["detail"].startswith("bad_tensor: dtype '\\x00\\x00")
    assert len(answer["detail"]) <= DETAIL_MAX_CHARS + len("bad_tensor: ")
    assert all(m.fields["outcome"] == "completed" for m in got.values())
    assert all(r["status"] == "completed" for r in c.records("s1"))
    for node in ("s1", "w1", "w2"):
        lines = c.procs[node].log_lines(100000, 1 << 24)
        assert max(len(line) for line in lines) < 1000, node
        assert not any("\x1b" in line or line.startswith(FORGED) for line in lines), node
    s1_log = "\n".join(c.procs["s1"].log_lines(100000, 1 << 24))
    assert "dropped a message from fz: it claims to be a ?[2J?" + FORGED in s1_log
    w1_log = "\n".join(c.procs["w1"].log_lines(100000, 1 << 24))
    assert "dropped a message from s1: bad_version: wire protocol 'AAAA" in w1_log
