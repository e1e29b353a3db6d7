"""Refused input from a source's clients is bounded as a peer's is (``agent.node.rejects``):
ZeroMQ gives each client connection a routing id of its own, so a sender named by it got a
fresh first line per connection; the connections without a node id are one sender."""

from __future__ import annotations

import logging

import zmq

from agent.node.rejects import REJECT_LOG_INTERVAL_S, Rejects


def _client_routing_ids(n):
    """The routing ids a ROUTER sees for ``n`` client connections (DEALERs that set none, as
    ``agent.fleet.client`` does), each connection a new one."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.RCVTIMEO, 5000)
    router.bind("inproc://clients")
    ids = []
    try:
        for _ in range(n):
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect("inproc://clients")
            dealer.send(b"garbage")
            ids.append(router.recv_multipart()[0])
            dealer.close()
    finally:
        router.close()
        ctx.term()
    return ids


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "agent.node.loop"]


def test_thirty_bad_inputs_over_thirty_client_connections_are_one_line(caplog):
    """Rule: each bad input from a new client connection is counted, but all of them are one
    sender, ``a client``: one line at once, then the minute's line with the rest counted."""
    ids = _client_routing_ids(30)
    assert len(set(ids)) == 30  # ZeroMQ made a new routing id for each connection
    drops, now = [], [0.0]
    reject = Rejects(drops.append, clock=lambda: now[0])
    why = "a client's input holds NaN, inf or values beyond +-1e+06 (answered error, bad_input)"
    with caplog.at_level(logging.WARNING, logger="agent.node.loop"):
        for i, identity in enumerate(ids[:29]):
            now[0] = 0.003 * i
            reject("bad_input", identity, why)
        assert _lines(caplog) == ["dropped a message from a client: " + why]
        now[0] = REJECT_LOG_INTERVAL_S + 1.0
        reject("bad_input", ids[29], why)
    assert len(drops) == 30
    assert _lines(caplog)[1:] == ["dropped a message from a client: %s (and 28 more dropped "
                                  "since the last line: bad_input 28)" % why]


def test_peers_are_still_named_each_beside_a_flood_from_clients(caplog):
    """Rule: node ids keep a first line each (per reason): a peer of another wire protocol is
    named at once however many client connections sent garbage before it."""
    ids = _client_routing_ids(80)
    reject = Rejects(lambda reason: None, clock=lambda: 0.0)
    with caplog.at_level(logging.WARNING, logger="agent.node.loop"):
        for identity in ids:
            reject("bad_shape", identity, "a client's input of the wrong shape")
        for peer in ("fast", "slow"):
            reject("bad_version", peer.encode(), "wire protocol 1, expected 2")
            reject("bad_version", peer.encode(), "wire protocol 1, expected 2")
    assert _lines(caplog) == [
        "dropped a message from a client: a client's input of the wrong shape",
        "dropped a message from fast: wire protocol 1, expected 2",
        "dropped a message from slow: wire protocol 1, expected 2"]
