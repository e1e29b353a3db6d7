"""A data connection's heartbeat timeout grows with the time one message needs on its link
(``agent.net.liveness``), and the transport's sockets are given those timeouts."""

import pytest
import zmq

from agent.config.node import Peer
from agent.net import liveness
from agent.net.liveness import (HEARTBEAT_TIMEOUT_MS, StageSizes, data_timeouts,
                                link_timeout_ms)
from agent.net.transport import Transport

# four stages; stage 1's input is a 3,570-byte image, the later ones small
SIZES_W1 = StageSizes((1, 1), (3570.0, 1000.0, 800.0, 500.0))


def _peer(pid, stage, rate, last=0):
    return Peer(pid, stage, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", rate, last_stage=last)


def test_a_fast_or_unknown_link_keeps_the_default_timeout():
    """Rule: a link of unknown rate (0), one with no large message, and one whose message
    crosses in milliseconds all keep HEARTBEAT_TIMEOUT_MS, so dead peers there are found fast."""
    assert link_timeout_ms(3570.0, 0.0) == HEARTBEAT_TIMEOUT_MS
    assert link_timeout_ms(0.0, 2000.0) == HEARTBEAT_TIMEOUT_MS
    assert HEARTBEAT_TIMEOUT_MS <= link_timeout_ms(3570.0, 1.6e6) < HEARTBEAT_TIMEOUT_MS + 50


def test_a_slow_link_waits_margin_queue_and_twice_the_message_time():
    """Rule: timeout = margin + queue bound + 2 x message bytes / rate when above the default;
    7 MB on 4 MB/s waits 1.5 + 1 + 3.5 s."""
    assert link_timeout_ms(7e6, 4e6) == liveness.MARGIN_MS + liveness.QUEUE_BOUND_MS + 3500
    assert link_timeout_ms(2000.0, 2000.0) == liveness.MARGIN_MS + liveness.QUEUE_BOUND_MS + 2000
    assert link_timeout_ms(1e12, 1.0) == liveness.TTL_MAX_MS  # bounded by what ZMTP can carry


def test_both_ends_of_a_slow_link_wait_for_its_largest_message_either_way():
    """Rule: a link's timeout counts the tasks crossing it in either direction (a PONG or ACK
    queues behind them): the source's DEALER to w1a and w1a's DEALER back to the source and
    w1a's ROUTER all wait for one stage-1 task at 2,000 B/s; w1a's fast link to w2a does not."""
    msg = 3570.0 + liveness.HEADER_ALLOWANCE_BYTES
    slow = link_timeout_ms(msg, 2000.0)
    assert slow > 2 * HEARTBEAT_TIMEOUT_MS
    router, dealers = data_timeouts([_peer("cam1", 0, 2000.0), _peer("w2a", 2, 1.6e6)], SIZES_W1)
    assert dealers == {"cam1": slow, "w2a": link_timeout_ms(1000.0 + msg - 3570.0, 1.6e6)}
    assert dealers["w2a"] < HEARTBEAT_TIMEOUT_MS + 50
    assert router == slow
    source = StageSizes((0, 0), SIZES_W1.input_bytes)
    router, dealers = data_timeouts([_peer("w1a", 1, 2000.0)], source)
    assert dealers == {"w1a": slow}
    assert router == slow


def test_a_peer_holding_several_stages_counts_its_largest_input():
    """Rule: tasks for any stage a peer serves may cross its link: the largest input decides."""
    sizes = StageSizes((0, 0), (100.0, 9000.0, 50.0))
    _, dealers = data_timeouts([_peer("w", 1, 1000.0, last=3)], sizes)
    assert dealers["w"] == link_timeout_ms(9000.0 + liveness.HEADER_ALLOWANCE_BYTES, 1000.0)


@pytest.fixture
def w1a():
    """w1a's transport, opened with its links' sizes: a slow link to cam1 (2,000 B/s) and a
    fast one to w2a; closed after the test."""
    ctx = zmq.Context()
    t = Transport(ctx, "w1a", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                  [_peer("cam1", 0, 2000.0), _peer("w2a", 2, 1.6e6)])
    t.sizes = SIZES_W1
    try:
        t.open()
        yield t
    finally:
        t.close()
        ctx.term()


def test_the_transport_gives_its_data_and_control_sockets_the_links_timeouts(w1a):
    """Rule: with sizes set before ``open``, a slow peer's DEALER and SUB, the ROUTER and the
    PUB carry the slow link's timeout (the TTL at least that), a fast peer's DEALER the
    default; real sockets, read back with getsockopt."""
    t = w1a
    slow = link_timeout_ms(3570.0 + liveness.HEADER_ALLOWANCE_BYTES, 2000.0)
    assert t.dealers["cam1"].getsockopt(zmq.HEARTBEAT_TIMEOUT) == slow
    assert t.dealers["cam1"].getsockopt(zmq.HEARTBEAT_TTL) >= slow
    assert t.dealers["w2a"].getsockopt(zmq.HEARTBEAT_TIMEOUT) < HEARTBEAT_TIMEOUT_MS + 50
    assert t.router.getsockopt(zmq.HEARTBEAT_TIMEOUT) == slow
    assert t.subs["cam1"].getsockopt(zmq.HEARTBEAT_TIMEOUT) == slow
    assert t.pub.getsockopt(zmq.HEARTBEAT_TIMEOUT) == slow
    assert (t.subs["w2a"].getsockopt(zmq.HEARTBEAT_TIMEOUT)
            == liveness.CONTROL_HEARTBEAT_TIMEOUT_MS)


def test_control_sockets_have_no_tcp_user_timeout_and_data_sockets_keep_theirs(w1a):
    """Rule: the PUB and the SUBs carry no TCP user timeout (TCP_MAXRT 0): Linux counts it
    from the first re-send of the oldest unacknowledged bytes, and heartbeats whose ACKs queue
    behind tasks on a slow link are re-sent over and over, so the kernel cut the control
    connection while ACKs still arrived and the peer was taken for gone; the data sockets keep
    theirs (at least TCP_USER_TIMEOUT_MS). Real sockets, read back with getsockopt."""
    if not hasattr(zmq, "TCP_MAXRT"):
        pytest.skip("this pyzmq has no TCP_MAXRT")
    t = w1a
    assert t.pub.getsockopt(zmq.TCP_MAXRT) == 0
    assert {p: s.getsockopt(zmq.TCP_MAXRT) for p, s in t.subs.items()} == {"cam1": 0, "w2a": 0}
    assert t.router.getsockopt(zmq.TCP_MAXRT) >= liveness.TCP_USER_TIMEOUT_MS
    assert all(d.getsockopt(zmq.TCP_MAXRT) >= liveness.TCP_USER_TIMEOUT_MS
               for d in t.dealers.values())


def test_a_predecessors_link_is_sized_by_what_crosses_it_not_by_its_own_inputs():
    """Rule: a stage-2 worker's link to its stage-1 predecessor carries the stage-2 inputs the
    predecessor sends it (and nothing of stage 1's own, larger inputs, which never cross from
    here), so a slow predecessor link does not stretch every connection's timeout to the
    predecessor's input size."""
    sizes = StageSizes((2, 2), (1e5, 1e3, 500.0))
    router, links = data_timeouts([_peer("w1", 1, 2000.0), _peer("w3", 3, 1e6)], sizes)
    crossing = 1e3 + liveness.HEADER_ALLOWANCE_BYTES
    assert links["w1"] == liveness.link_timeout_ms(crossing, 2000.0) < 5000
    assert router == links["w1"]
