"""A connection a peer refused at the CURVE handshake is dialled again (``agent.net.redial``).

libzmq does not reconnect a connection whose handshake failed, so a node whose key a peer's
allow-list lacked stayed cut off from that peer after the operator fixed the allow-list and
restarted the peer, until the node was restarted too. Real transports on loopback: node "a"
connects to a node "b" that refuses its key, then to a "b" restarted on the same endpoints
with the key allowed; a's data and control connections come back by themselves, with one
WARNING per plane."""

from __future__ import annotations

import time

import zmq

from agent.config.node import Peer
from agent.net import redial
from agent.net.security import CurveSecurity, generate_keypair, load_secret_key_file
from agent.net.transport import CONTROL, DATA, Transport
from agent.protocol.wire import BROADCAST, topic
from agent.testbed.ports import free_ports


def _pump(transports, until, timeout_s: float) -> list:
    """Poll every transport until ``until(events)`` holds; the events seen."""
    seen: list = []
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        for tr in transports:
            seen += [(tr.node_id,) + ev for ev in tr.poll(0.05)]
        if until(seen):
            return seen
    raise AssertionError("timed out; events seen: %r" % [(e[0], e[1], e[2]) for e in seen])


def test_a_connection_refused_at_the_handshake_comes_back_once_the_peer_allows_it(
        tmp_path, monkeypatch, caplog):
    """Rule: after the peer refused this node's key, the node dials its DEALER and SUB again
    every REDIAL_S; once the peer runs with the key allowed, data and control flow again
    without a restart of this node, and each plane's refusal was logged once."""
    monkeypatch.setattr(redial, "REDIAL_S", 0.3)
    keys = {n: load_secret_key_file(generate_keypair(str(tmp_path), n)[1]) for n in "ab"}
    # ports below the ephemeral range: b's are bound again after a moment unbound
    ports = free_ports(4)
    ends = {n: ("tcp://127.0.0.1:%d" % ports[2 * i], "tcp://127.0.0.1:%d" % ports[2 * i + 1])
            for i, n in enumerate("ab")}
    # a context per agent process, as each has one (with its ZAP handler)
    ctxs = {n: zmq.Context() for n in ("a", "b", "b again")}

    def node(me, other, allowed, ctx_name=""):
        return Transport(ctxs[ctx_name or me], me, ends[me][0], ends[me][1],
                         [Peer(other, 1, ends[other][0], ends[other][1])],
                         security=CurveSecurity(*keys[me], allowed_public_keys=allowed),
                         server_keys={other: keys[other][0]})

    a = node("a", "b", [keys["b"][0]])
    b = node("b", "a", [])  # a's key is not allowed
    a.open()
    b.open()
    try:
        with caplog.at_level("WARNING", logger="agent.net.transport"):
            _pump([a, b], lambda s: a.redial.redials >= 2, 20.0)  # refused, dialled again
            b.close()
            # libzmq closes a socket's listener in its I/O thread, after close() returns: the
            # context's end waits for it, as a restarted process's start follows its exit
            ctxs["b"].term()
            b = node("b", "a", [keys["a"][0]], "b again")  # restarted: the key is allowed
            b.open()

            def through(seen):
                a.send("b", [b"payload"])
                b.publish(BROADCAST, [b"hello"])
                return (any(e[0] == "b" and e[1] == DATA for e in seen)
                        and any(e[0] == "a" and e[1] == CONTROL for e in seen))
            seen = _pump([a, b], through, 30.0)
        control = [e for e in seen if e[0] == "a" and e[1] == CONTROL][0]
        assert control[2] == "b" and bytes(control[3][0]) == topic(BROADCAST)
        refusals = [r.getMessage() for r in caplog.records if "refused at the handshake" in
                    r.getMessage()]
        assert sorted(m.split()[0] for m in refusals) == ["control", "data"], refusals
        assert all("to b (" in m for m in refusals)
    finally:
        a.close()
        b.close()
        for c in ctxs.values():
            c.term()
