"""Every node of a DTO-EE fleet runs one routing ``step`` (``policy_knobs.step``). A fleet of
``joint`` and ``default`` nodes (a half-done re-render, a hand-edited config) had the joint
nodes wait out ``round_interval_s`` every round for stage reports that never came, and no
heartbeat said why: ``dtoee_timing`` carried the three slot settings only. Now its 4th item is
the sender's step; a receiver on another step counts ``fleet_mismatch_dtoee_timing`` and logs
the difference and the fix. An earlier agent's three items are compared on those three."""

from __future__ import annotations

import logging
import time
from collections import Counter
from types import SimpleNamespace

import zmq

from agent.config.node import Peer
from agent.net.transport import CONTROL
from agent.node.fleetcheck import FleetCheck, own_fields
from agent.node.peerstate import take_heartbeat
from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.unit.built_worker import built_worker
from tests.unit.test_fleetcheck_node import _publishing

W2 = Peer("w2a", 2, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2")  # a worker of stage 2 of 4
FIX = ("every node of a DTO-EE fleet needs the same slot_length_s, rounds_per_slot, "
       "round_interval_s, step (slots and configuration phases line up across nodes by them, "
       "and a joint node waits every round for its stage siblings' reports); set them alike in "
       "every node's config (one fleet render, knobs.dtoee.step alike) and restart the nodes "
       "that differ")


def _cfg(knobs, stage=1, slot_length_s=5.0):
    return SimpleNamespace(policy="dtoee", role="worker", stage=stage,
                           slot_length_s=slot_length_s, rounds_per_slot=20,
                           round_interval_s=0.05, policy_knobs=knobs)


def _beat(timing):
    """A HEARTBEAT of w2a with ``timing`` as its dtoee_timing, as it comes off the wire."""
    fields = dict(role="worker", stage=2, capacity_flops=1e9, input_queue=0, output_queue=0,
                  service_time_s=0.01, no_route=0, policy="dtoee", dtoee_timing=timing)
    return wire.decode(wire.encode(Kind.HEARTBEAT, "w2a", fields))


def _beat_of(knobs, **over):
    """The heartbeat a stage-2 dtoee node whose policy_knobs are ``knobs`` sends."""
    return _beat(own_fields(_cfg(knobs, stage=2, **over))["dtoee_timing"])


class _Node:
    """A stage-1 dtoee node's heartbeat intake: its view, counters and fleet check."""

    def __init__(self, knobs):
        self.view = SimpleNamespace(peer_state={}, num_stages=4)
        self.counters: Counter = Counter()
        self.fleet = FleetCheck(_cfg(knobs), self._count, lambda: 100.0)

    def _count(self, name):
        self.counters[name] += 1

    def take(self, msg):
        return take_heartbeat(self.view, msg, W2, self.fleet)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_dtoee_heartbeat_tells_the_step_the_node_runs_its_default_when_unset():
    """Rule: dtoee_timing's 4th item is the step DTO-EE reads from policy_knobs, ``default``
    when the knob is unset."""
    assert own_fields(_cfg({}))["dtoee_timing"] == [5.0, 20, 0.05, "default"]
    assert own_fields(_cfg({"step": "joint"}))["dtoee_timing"] == [5.0, 20, 0.05, "joint"]


def test_a_neighbour_on_another_step_is_kept_counted_and_named_with_the_fix(caplog):
    """Rule: a dtoee neighbour whose step differs from this node's: its heartbeat is kept,
    counted ``fleet_mismatch_dtoee_timing``, and one WARNING names step, both values and the
    fix (the same step on every node: knobs.dtoee.step alike in one render)."""
    caplog.set_level(logging.WARNING, logger="agent.node.loop")
    node = _Node({"step": "joint"})
    assert node.take(_beat_of({})) == ("", False)
    assert node.take(_beat_of({"step": "paper"})) == ("", False)
    assert "w2a" in node.view.peer_state
    assert node.counters == {"fleet_mismatch_dtoee_timing": 2}
    assert _warnings(caplog) == ["w2a has step default, this node joint: " + FIX]


def test_a_step_and_a_slot_setting_that_differ_are_named_in_one_line(caplog):
    """Rule: a neighbour differing in slot_length_s and step is one mismatch, one line naming
    both."""
    caplog.set_level(logging.WARNING, logger="agent.node.loop")
    node = _Node({})
    node.take(_beat_of({"step": "joint"}, slot_length_s=10.0))
    assert node.counters == {"fleet_mismatch_dtoee_timing": 1}
    assert _warnings(caplog) == ["w2a has slot_length_s 10, this node 5; step joint, this node "
                                 "default: " + FIX]


def test_the_same_step_set_or_by_default_passes_without_a_word(caplog):
    """Rule: the same step is no difference, whether set in policy_knobs or left unset (its
    default)."""
    caplog.set_level(logging.INFO, logger="agent.node.loop")
    joint, default = _Node({"step": "joint"}), _Node({})
    joint.take(_beat_of({"step": "joint"}))
    default.take(_beat_of({"step": "default"}))
    default.take(_beat_of({}))
    assert not joint.counters and not default.counters and not caplog.records


def test_an_earlier_agents_three_items_are_compared_on_those_three_only(caplog):
    """Rule: a dtoee_timing of three items (an agent from before step) is compared on them:
    the same three pass a joint node without a word, a slot setting that differs is named
    without step."""
    caplog.set_level(logging.WARNING, logger="agent.node.loop")
    node = _Node({"step": "joint"})
    node.take(_beat([5.0, 20, 0.05]))
    assert not node.counters and not caplog.records
    node.take(_beat([10.0, 20, 0.05]))
    assert node.counters == {"fleet_mismatch_dtoee_timing": 1}
    (line,) = _warnings(caplog)
    assert line.startswith("w2a has slot_length_s 10, this node 5: ") and "step" not in line


def test_real_nodes_on_joint_and_default_step_count_and_name_it(tmp_path, caplog):
    """Rule: w1a (step joint) publishes its heartbeat on a real ZeroMQ PUB socket; w2a (step
    unset: default) takes it off a SUB: w1a is alive, the heartbeat counted
    ``fleet_mismatch_dtoee_timing`` and one WARNING names step and the fix."""
    caplog.set_level(logging.WARNING, logger="agent.node.loop")
    ctx = zmq.Context()
    w1a = built_worker(str(tmp_path / "w1a"), "w1a", policy="dtoee",
                       policy_knobs={"step": "joint"})
    w2a = built_worker(str(tmp_path / "w2a"), "w2a", policy="dtoee")
    sub = ctx.socket(zmq.SUB)
    try:
        ep = _publishing(w1a, ctx)
        _publishing(w2a, ctx)  # w2a publishes its own heartbeat when w1a comes alive
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, wire.topic(wire.BROADCAST))
        sub.connect(ep)
        deadline = time.monotonic() + 30.0  # a SUB hears only what is sent once it is joined
        while True:
            w1a.node._publish_heartbeat()
            if sub.poll(100) or time.monotonic() > deadline:
                break
        w2a.node._dispatch((CONTROL, "w1a", sub.recv_multipart(zmq.NOBLOCK)))
        assert "w1a" in w2a.node.view.alive
        assert w2a.node.outbox.counters["fleet_mismatch_dtoee_timing"] == 1
        said = [m for m in _warnings(caplog) if "DTO-EE fleet" in m]
        assert len(said) == 1 and said[0].startswith(
            "w1a has step joint, this node default: every node of a DTO-EE fleet")
    finally:
        sub.close()
        w1a.close()
        w2a.close()
        ctx.term()
