"""A neighbour's heartbeat is kept only when its config allows what it claims: its own stage
and role, no negative capacity or service time, and a ``no_route`` that is a stage after its
own, queues a node can hold (at most MAX_QUEUE_TASKS) and a service time of at most a day. One
heartbeat claiming ``no_route`` 2**53 - 1 had made its predecessor refuse every task "until a
route to stage 9007199254740991 is back"; a queue of 2**53 - 1 tasks steered MDI-Exit."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agent.config.checks import MAX_INTERVAL_S, MAX_QUEUE_TASKS
from agent.config.node import Peer
from agent.node.peerstate import heartbeat_problem, take_heartbeat
from agent.protocol import wire
from agent.protocol.wire import Kind

W2 = Peer("w2", 2, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2")  # a worker of stage 2 of 4


def _beat(kind=Kind.HEARTBEAT, **over):
    fields = dict(role="worker", stage=2, capacity_flops=1e9, input_queue=0, output_queue=0,
                  service_time_s=0.01)
    if kind == Kind.HEARTBEAT:
        fields["no_route"] = 0
    fields.update(over)
    return wire.decode(wire.encode(kind, "w2", fields))


@pytest.mark.parametrize("over,why", [
    (dict(no_route=2 ** 53 - 1), "no_route 9007199254740991 is no stage after its own (3..4)"),
    (dict(no_route=2), "no_route 2 is no stage after its own"),
    (dict(stage=7), "claims to be a worker of stage 7; its config says stage 2"),
    (dict(role="source"), "claims to be a source of stage 2"),
    (dict(capacity_flops=-1.0), "capacity_flops -1.0 < 0"),
    (dict(service_time_s=-5.0), "service_time_s -5.0 outside [0, 86400] s"),
    (dict(service_time_s=1e300), "service_time_s 1e+300 outside [0, 86400] s"),
    (dict(input_queue=2 ** 53 - 1), "input_queue 9007199254740991 outside [0, 1048576]"),
    (dict(output_queue=MAX_QUEUE_TASKS + 1), "output_queue 1048577 outside [0, 1048576]"),
])
def test_a_claim_its_config_rules_out_is_refused_and_nothing_of_it_kept(over, why):
    """Rule: the heartbeat is refused with the reason, and the peer's state stays as it was."""
    view = SimpleNamespace(peer_state={}, num_stages=4)
    got, changed = take_heartbeat(view, _beat(**over), W2)
    assert why in got and not changed and view.peer_state == {}


def test_a_true_heartbeat_is_kept_and_a_change_of_no_route_is_told():
    """Rule: stage 3 or 4 (after its own 2) is a no_route it may say; the change is told, so
    the node checks its own route; a QUEUE_STATE (no no_route) keeps the last heartbeat's."""
    view = SimpleNamespace(peer_state={}, num_stages=4)
    assert take_heartbeat(view, _beat(no_route=3), W2) == ("", True)
    assert view.peer_state["w2"]["no_route"] == 3
    assert take_heartbeat(view, _beat(Kind.QUEUE_STATE, input_queue=5), W2) == ("", False)
    assert view.peer_state["w2"]["no_route"] == 3 and view.peer_state["w2"]["input_queue"] == 5
    assert take_heartbeat(view, _beat(no_route=0), W2) == ("", True)


def test_a_peer_holding_several_stages_may_say_no_route_only_after_its_last():
    """Rule: a peer serving stages 2..3 reaches stage 3 itself: its no_route is 4 or 0."""
    both = Peer("w2", 2, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", last_stage=3)
    assert heartbeat_problem(_beat(no_route=4).fields, both, 4) == ""
    assert "no stage after its own (4..4)" in heartbeat_problem(_beat(no_route=3).fields, both, 4)


def test_the_largest_queue_and_service_time_a_node_could_have_are_kept():
    """Rule: the bounds are states a node may be in (max_queue_tasks is at most
    MAX_QUEUE_TASKS, every timeout at most MAX_INTERVAL_S): kept, not refused."""
    view = SimpleNamespace(peer_state={}, num_stages=4)
    beat = _beat(input_queue=MAX_QUEUE_TASKS, output_queue=MAX_QUEUE_TASKS,
                 service_time_s=MAX_INTERVAL_S)
    assert take_heartbeat(view, beat, W2) == ("", False)
    assert view.peer_state["w2"]["input_queue"] == MAX_QUEUE_TASKS
