"""A plain (keyless, local) client is one sender, ``a client``, whatever routing id it sets
itself: one that called itself ``w1`` was logged as if worker w1 had sent its bad input, and
40 clients of 40 printable ids were 40 WARNING lines. On a real transport's ipc:// client
socket, with the answer still going back to the connection the message came on."""

from __future__ import annotations

import logging

import pytest
import zmq

from agent.net.clientkeys import ClientId
from agent.net.transport import CLIENT, Transport
from agent.node.rejects import Rejects


@pytest.fixture
def source(tmp_path):
    """(a source's transport with a plain ipc:// client socket, its client endpoint, ctx)."""
    ctx = zmq.Context()
    endpoint = "ipc://%s" % (tmp_path / "client.sock")
    t = Transport(ctx, "s1", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", [],
                  client_bind=endpoint)
    t.open()
    try:
        yield t, endpoint, ctx
    finally:
        t.close()
        ctx.term()


def _client(ctx, endpoint, routing_id):
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.setsockopt(zmq.ROUTING_ID, routing_id)
    d.setsockopt(zmq.RCVTIMEO, 20000)
    d.connect(endpoint)
    return d


def _client_events(t, want):
    got = []
    for _ in range(400):  # 20 s at most
        got += [e for e in t.poll(0.05) if e[0] == CLIENT]
        if len(got) >= want:
            return got
    raise AssertionError("only %d of %d client messages arrived" % (len(got), want))


def test_a_plain_client_calling_itself_w1_is_logged_as_a_client_not_w1(source, caplog):
    """Rule: the routing id of a plain client's message comes as a ClientId without a key's
    name and never revoked; its refused input is logged as from `a client`, never as from the
    `w1` it set itself; the answer sent to that id reaches the client."""
    t, endpoint, ctx = source
    d = _client(ctx, endpoint, b"w1")
    try:
        d.send(b"not a message of the wire protocol")
        (_, who, frames), = _client_events(t, 1)
        assert isinstance(who, ClientId) and bytes(who) == b"w1"
        assert (who.key_name, who.revoked) == ("", False)
        reject = Rejects(lambda reason: None, clock=lambda: 0.0)
        with caplog.at_level(logging.WARNING, logger="agent.node.loop"):
            reject("bad_input", who, "not a task")
        lines = [r.getMessage() for r in caplog.records if r.name == "agent.node.loop"]
        assert lines == ["dropped a message from a client: not a task"]
        assert t.reply(who, [b"answer"], client=True)
        assert d.recv() == b"answer"
    finally:
        d.close()


def test_forty_plain_clients_of_forty_printable_ids_are_one_sender(source, caplog):
    """Rule: bad input from 40 plain clients, each with its own printable routing id, is one
    WARNING line at once (`a client`), the other 39 drops counted, not 40 lines."""
    t, endpoint, ctx = source
    clients = [_client(ctx, endpoint, b"cam%d" % i) for i in range(40)]
    try:
        for d in clients:
            d.send(b"junk")
        events = _client_events(t, 40)
        drops = []
        reject = Rejects(drops.append, clock=lambda: 0.0)
        with caplog.at_level(logging.WARNING, logger="agent.node.loop"):
            for _, who, _ in events:
                reject("bad_input", who, "not a task")
        assert len(drops) == 40
        assert [r.getMessage() for r in caplog.records if r.name == "agent.node.loop"] == [
            "dropped a message from a client: not a task"]
    finally:
        for d in clients:
            d.close()


def test_an_answer_to_a_client_whose_connection_is_gone_is_reported_not_sent(source):
    """Rule: the client socket refuses a send to a routing id with no connection
    (ROUTER_MANDATORY), so ``reply`` says False and the outbox counts the answer as
    undeliverable (``client_answer_undeliverable``) instead of ZeroMQ dropping it unseen."""
    t, endpoint, ctx = source
    d = _client(ctx, endpoint, b"cam")
    try:
        d.send(b"hello")
        (_, who, _), = _client_events(t, 1)
        assert t.reply(who, [b"answer"], client=True)
        assert d.recv() == b"answer"
    finally:
        d.close(0)
    for _ in range(400):  # the disconnect reaches the ROUTER within 20 s
        if not t.reply(who, [b"late answer"], client=True):
            break
        t.poll(0.05)
    else:
        raise AssertionError("a reply to a gone client still reported as sent after 20 s")
