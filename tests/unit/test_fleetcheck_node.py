"""Two real nodes of one chain (w1a -> w2a), built from a testbed config: w1a publishes its
heartbeat on a real ZeroMQ PUB socket, a SUB takes it off the wire, and w2a's loop is handed it
as its transport would. A w2a restarted on another policy, or with other DTO-EE slot settings,
had taken w1a's heartbeats without a word; now it still counts w1a alive, and counts and logs
the difference."""

from __future__ import annotations

import logging
import time

import pytest
import zmq

from agent.net.transport import CONTROL
from agent.protocol import wire
from tests.unit.built_worker import built_worker
from tests.unit.endpoints import loopback_endpoints


@pytest.fixture
def ctx():
    ctx = zmq.Context()
    yield ctx
    ctx.term()


def _publishing(built, ctx):
    """``built`` with its control PUB bound on a free loopback port (its endpoint returned);
    only that: its peers' endpoints are the testbed's, not this test's."""
    ep = loopback_endpoints(["control"])["control"]
    tr = built.transport
    tr.ctx = ctx  # built without one: ``serve`` hands it its own
    tr.pub = tr._socket(zmq.PUB)
    tr.pub.bind(ep)
    return ep


@pytest.fixture
def w1a_heartbeat(tmp_path, ctx):
    """The frames of one heartbeat w1a (dtoee, slot_length_s 10) published, topic included,
    as a SUB connected to its control endpoint received them."""
    built = built_worker(str(tmp_path / "w1a"), "w1a", policy="dtoee", slot_length_s=10.0)
    ep = _publishing(built, ctx)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, wire.topic(wire.BROADCAST))
    sub.connect(ep)
    try:
        deadline = time.monotonic() + 30.0  # a SUB hears only what is sent once it is joined
        while True:
            built.node._publish_heartbeat()
            if sub.poll(100) or time.monotonic() > deadline:
                break
        yield sub.recv_multipart(zmq.NOBLOCK)
    finally:
        sub.close()
        built.close()


def _receive(node, frames):
    node._dispatch((CONTROL, "w1a", list(frames)))


def test_a_heartbeat_carries_the_senders_policy_and_dtoee_slot_settings(w1a_heartbeat):
    """Rule: the node loop's heartbeat names its policy and, as a dtoee node, its
    slot_length_s, rounds_per_slot, round_interval_s and step, besides its queue state."""
    _, frames = wire.split_topic(w1a_heartbeat)
    msg = wire.decode(frames)
    assert msg.kind == wire.Kind.HEARTBEAT and msg.sender == "w1a"
    assert msg.fields["policy"] == "dtoee" and msg.fields["dtoee_timing"] == [10.0, 20, 0.05,
                                                                         "default"]
    assert msg.fields["stage"] == 1 and msg.fields["no_route"] == 0


def test_a_neighbour_on_another_policy_is_alive_counted_and_named(w1a_heartbeat, tmp_path,
                                                                 ctx, caplog):
    """Rule: w2a on mdi-exit takes w1a's (dtoee) heartbeats: w1a is alive and its queue state
    kept, each heartbeat counted ``fleet_mismatch_policy`` (nothing dropped), one WARNING
    naming both policies and the fix; a heartbeat without the field (an earlier agent) is
    taken as before, not compared."""
    caplog.set_level(logging.WARNING, logger="agent.node.loop")
    built = built_worker(str(tmp_path / "w2a"), "w2a", policy="mdi-exit")
    _publishing(built, ctx)
    try:
        node = built.node
        _receive(node, w1a_heartbeat)
        _receive(node, w1a_heartbeat)
        assert "w1a" in node.view.alive and node.view.peer_state["w1a"]["policy"] == "dtoee"
        counters = node.outbox.counters
        assert counters["fleet_mismatch_policy"] == 2
        assert not any(n for k, n in counters.items() if k.startswith("drop_"))
        said = [r.getMessage() for r in caplog.records if "fleet" in r.getMessage()]
        assert said == ["w1a runs dtoee, this node mdi-exit: a fleet runs one policy (each drops "
                        "the other's control messages); render every node with one --policy "
                        "and restart them all"]
        old = wire.encode(wire.Kind.HEARTBEAT, "w1a", dict(
            role="worker", stage=1, capacity_flops=1e9, input_queue=3, output_queue=0,
            service_time_s=0.01))
        _receive(node, [wire.topic(wire.BROADCAST)] + [bytes(f) for f in old])
        assert counters["fleet_mismatch_policy"] == 2
        assert node.view.peer_state["w1a"]["input_queue"] == 3
    finally:
        built.close()


def test_a_dtoee_neighbour_with_another_slot_length_is_counted_and_named(w1a_heartbeat,
                                                                         tmp_path, ctx, caplog):
    """Rule: w2a on dtoee with slot_length_s 5 takes the heartbeat of w1a (slot_length_s 10):
    w1a is alive, the heartbeat counted ``fleet_mismatch_dtoee_timing``, and one WARNING names
    the setting and both values."""
    caplog.set_level(logging.WARNING, logger="agent.node.loop")
    built = built_worker(str(tmp_path / "w2a"), "w2a", policy="dtoee", slot_length_s=5.0)
    _publishing(built, ctx)
    try:
        node = built.node
        _receive(node, w1a_heartbeat)
        assert "w1a" in node.view.alive
        assert node.outbox.counters["fleet_mismatch_dtoee_timing"] == 1
        assert not node.outbox.counters["fleet_mismatch_policy"]
        said = [r.getMessage() for r in caplog.records if "DTO-EE fleet" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith("w1a has slot_length_s 10, this node 5:")
    finally:
        built.close()
