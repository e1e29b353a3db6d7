"""What arrives from or about a peer never upsets the transport: a handshake run id that is
not UTF-8, a message of ten thousand frames, a peer name whose DNS answers rotate. Real
transports and sockets on 127.0.0.1; the resolver is passed in."""

from __future__ import annotations

import time

import zmq

from agent.net.addrfamily import IPV4
from agent.net.frames import MAX_FRAMES
from agent.net.transport import DATA, Transport
from agent.net.twins import Twins
from agent.testbed.ports import free_ports
from tests.unit.test_slow_peer_names import _flows, dialling_by_name

WAIT_S = 30.0  # an upper bound on waits for what must happen, never a timing under test


def test_a_data_message_with_a_run_id_not_utf8_is_delivered_not_raised():
    """Rule: any sender may put any bytes in its handshake's X-Run property; one that is not
    UTF-8 leaves its sender unwatched for twins, and its message still reaches the loop as
    DATA (``poll`` raised UnicodeDecodeError, which ended the agent's loop)."""
    (pc, pd) = free_ports(2)
    ctx = zmq.Context()
    tr = Transport(ctx, "me", "tcp://127.0.0.1:%d" % pc, "tcp://127.0.0.1:%d" % pd, [],
                   twins=Twins("own"))
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    try:
        tr.open()
        d.setsockopt(zmq.ROUTING_ID, b"w1")
        d.setsockopt(zmq.METADATA, b"X-Run:\xff\xfe\x80")
        d.connect("tcp://127.0.0.1:%d" % pd)
        d.send_multipart([b"header", b"tensor"])
        got = []
        end = time.monotonic() + WAIT_S
        while not got and time.monotonic() < end:
            got = [ev for ev in tr.poll(0.05) if ev[0] == DATA]
        assert [(ev[1], [f.bytes for f in ev[2]]) for ev in got] == \
            [(b"w1", [b"header", b"tensor"])]
        assert tr.twins.seen == 0
    finally:
        d.close()
        tr.close()
        ctx.term()


def test_a_name_whose_dns_answers_rotate_keeps_its_connection():
    """Rule: a peer name with several addresses, which the resolver hands out in turn (DNS
    round robin), is not moved while the address dialled is still one of them: its
    connections are not cut at every refresh round, and data and heartbeats keep flowing."""
    asked = []

    def rotating(host):
        asked.append(host)
        both = ((IPV4, "127.0.0.1"), (IPV4, "127.0.0.2"))
        return both if len(asked) % 2 else both[::-1]

    ctx = zmq.Context()
    a, b, ep, pb = dialling_by_name(ctx, "multi", rotating)
    try:
        a.open()
        b.open()
        dialled = dict(a.addrs.dialled)
        assert dialled[("b", "data")] == ep("127.0.0.1", pb, 1)
        end = time.monotonic() + WAIT_S
        while len(asked) < 5 and time.monotonic() < end:  # several rounds, both orders
            a.poll(0.02)
        a.poll(0.1)
        assert len(asked) >= 5
        assert a.addrs.moved == 0 and a.addrs.dialled == dialled
        _flows(b, a, "b")
    finally:
        a.close()
        b.close()
        ctx.term()


def test_a_message_of_too_many_frames_is_cut_and_the_next_one_arrives_whole():
    """Rule: a data message with more frames than any agent message (junk: a peer's bug, or
    anyone under security none) reaches the loop with ``MAX_FRAMES`` frames kept, its routing
    id first, the rest read and let go (a million empty frames grew the agent by 250 MB); the
    sender's next message arrives whole, in order."""
    (pc, pd) = free_ports(2)
    ctx = zmq.Context()
    tr = Transport(ctx, "me", "tcp://127.0.0.1:%d" % pc, "tcp://127.0.0.1:%d" % pd, [])
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    try:
        tr.open()
        d.setsockopt(zmq.ROUTING_ID, b"w1")
        d.connect("tcp://127.0.0.1:%d" % pd)
        d.send_multipart([b"junk"] + [b""] * 10000 + [b"last"])
        d.send_multipart([b"header", b"tensor"])
        got = []
        end = time.monotonic() + WAIT_S
        while len(got) < 2 and time.monotonic() < end:
            got += [ev for ev in tr.poll(0.05) if ev[0] == DATA]
        assert [ev[1] for ev in got] == [b"w1", b"w1"]
        assert len(got[0][2]) == MAX_FRAMES - 1 and got[0][2][0].bytes == b"junk"
        assert [f.bytes for f in got[1][2]] == [b"header", b"tensor"]
    finally:
        d.close()
        tr.close()
        ctx.term()
