"""MDI-Exit decides from a neighbour's queue state (HEARTBEAT, QUEUE_STATE) only as a node could
report it: the node keeps a state in ``view.peer_state`` only when its queues are at most
MAX_QUEUE_TASKS and its service time at most a day (``agent.node.peerstate``). A queue of
2^53 - 1 tasks (the most the wire carries), positive and well typed, had been taken as I_m
without a word; now it is counted ``drop_bad_heartbeat`` and the neighbour's last state holds."""

from __future__ import annotations

from agent.node.loop import Node
from agent.node.status import NodeStatus
from agent.policies.mdi_exit.agent import MdiExitPolicy
from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.unit.source_parts import source_parts


def _state(sender="w1", **over):
    """A stage-1 worker's QUEUE_STATE as it comes off the wire."""
    fields = dict(role="worker", stage=1, capacity_flops=1e9, input_queue=0, output_queue=0,
                  service_time_s=0.1)
    fields.update(over)
    return wire.decode(wire.encode(Kind.QUEUE_STATE, sender, fields))


def test_a_queue_state_no_node_could_have_is_counted_and_alg3_keeps_the_last_one(tmp_path):
    """Rule: on a real source node (real config, transport and outbox), a QUEUE_STATE of its
    stage-1 worker claiming 2^53 - 1 queued tasks or a service time of 1e300 s is counted
    ``drop_bad_heartbeat``; Alg. 3's fed queue stays at the worker's last state (7 tasks), not
    2^53 - 1, and its service time stays 0.1 s."""
    policy = MdiExitPolicy({1: 0.8, 2: 0.8, 3: 0.8}, {"admission_control": True})
    parts = source_parts(tmp_path, policy)
    try:
        node = Node(parts.cfg, parts.transport, policy, parts.view, parts.out, parts.side,
                    NodeStatus(parts.cfg, policy, parts.view, parts.out.counters))
        node._on_control(_state(input_queue=4, output_queue=3))
        assert node.outbox.counters.get("drop_bad_heartbeat", 0) == 0
        assert policy._fed_queue(node.view) == 7
        node._on_control(_state(input_queue=2 ** 53 - 1))
        node._on_control(_state(input_queue=1, service_time_s=1e300))
        assert node.outbox.counters["drop_bad_heartbeat"] == 2
        assert policy._fed_queue(node.view) == 7
        assert node.view.peer_state["w1"]["service_time_s"] == 0.1
    finally:
        parts.close()
