"""MDI-Exit takes a neighbour's queue state (HEARTBEAT, QUEUE_STATE) only when a node could
report it: queue lengths in [0, MAX_PEER_QUEUE_TASKS] and a service time in [0,
MAX_PEER_SERVICE_TIME_S]. A queue of 2^53 - 1 tasks (the most the wire carries) or a service time of 1e300 s, positive and well
typed, had been taken as I_m and Gamma_m without a word; now the policy refuses it with
``ValueError``, which the node loop counts as ``drop_bad_payload``, and goes on with that
neighbour's last accepted state."""

from __future__ import annotations

import pytest

from agent.node.loop import Node
from agent.node.status import NodeStatus
from agent.policies.api import NodeView, TaskInfo
from agent.policies.mdi_exit.agent import (MAX_PEER_QUEUE_TASKS, MAX_PEER_SERVICE_TIME_S,
                                           MdiExitPolicy)
from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.unit.source_parts import source_parts

TASK = TaskInfo("t1", 2, 10000)


def _state(kind=Kind.QUEUE_STATE, sender="a", stage=1, **over):
    """A neighbour's queue-state message as it comes off the wire."""
    fields = dict(role="worker", stage=stage, capacity_flops=1e9, input_queue=0, output_queue=0,
                  service_time_s=0.1)
    if kind == Kind.HEARTBEAT:
        fields["no_route"] = 0
    fields.update(over)
    return wire.decode(wire.encode(kind, sender, fields))


def _view(output_queue):
    """A worker of stages 1-2 of 3 (I_n = 10, Gamma_n = 50 ms) with one neighbour ``a`` (its
    peer state filled by the test)."""
    return NodeView(node_id="n", role="worker", stage=1, last_stage=2, num_stages=3,
                    peer_stages={"a": (1, 3)}, stage_flops=(1e9,) * 3,
                    stage_input_bytes=(1e4,) * 3, exit_stages=(1, 2), successors=("a",),
                    predecessors=(), link_rate_bytes_s={"a": 1e6}, input_queue=10,
                    output_queue=output_queue, service_time_s=0.05, alive={"a"})


def _take(policy, view, msg):
    """Deliver ``msg`` as the node loop does: its fields are kept in the view, then the policy
    sees it (and may refuse it)."""
    view.peer_state.setdefault(msg.sender, {}).update(msg.fields)
    return policy.on_control(msg, view, 0.0)


@pytest.mark.parametrize("kind", [Kind.QUEUE_STATE, Kind.HEARTBEAT])
@pytest.mark.parametrize("over,why", [
    (dict(input_queue=2 ** 53 - 1), "input_queue 9007199254740991 outside [0, 1048576]"),
    (dict(output_queue=2 ** 53 - 1), "output_queue 9007199254740991 outside [0, 1048576]"),
    (dict(input_queue=MAX_PEER_QUEUE_TASKS + 1), "input_queue 1048577 outside"),
    (dict(service_time_s=1e300), "service_time_s 1e+300 outside [0, 86400] s"),
    (dict(service_time_s=MAX_PEER_SERVICE_TIME_S * 1.5), "service_time_s 129600.0 outside"),
])
def test_a_queue_state_no_node_could_report_is_refused_and_the_last_accepted_one_holds(
        kind, over, why):
    """Rule: the policy raises ValueError naming the field (the loop's bad_payload) and
    decides as before the message, from the last accepted state I_a = 3, Gamma_a = 0.1 s: O_n
    = 4 > I_a and I_n Gamma_n = 0.5 s > D_na + I_a Gamma_a = 0.31 s, so ``a`` takes the task
    (taken, I_a = 2^53 - 1 or Gamma_a = 1e300 s would keep it here; O_a counts only in a
    source's Alg. 3, as in the node-loop test below)."""
    p = MdiExitPolicy({1: 0.8, 2: 0.8}, {})
    v = _view(output_queue=3)
    assert _take(p, v, _state(kind, input_queue=3)) == []
    with pytest.raises(ValueError) as exc:
        _take(p, v, _state(kind, **dict(dict(input_queue=3), **over)))
    assert why in str(exc.value)
    assert p.choose_successor(TASK, v) == "a"


def test_the_largest_queue_and_service_time_a_node_could_report_are_taken():
    """Rule: the bounds themselves are a node's possible state: no ValueError, and Alg. 2 reads
    them (a neighbour with 2^20 queued tasks takes no task from a short output queue)."""
    p = MdiExitPolicy({1: 0.8, 2: 0.8}, {})
    v = _view(output_queue=3)
    _take(p, v, _state(input_queue=MAX_PEER_QUEUE_TASKS, output_queue=MAX_PEER_QUEUE_TASKS,
                       service_time_s=MAX_PEER_SERVICE_TIME_S))
    assert p.choose_successor(TASK, v) is None


def test_the_node_loop_counts_a_refused_queue_state_as_bad_payload(tmp_path):
    """Rule: on a real source node (real config, transport and outbox), a QUEUE_STATE of its
    stage-1 worker claiming 2^53 - 1 queued tasks is counted ``drop_bad_payload``; Alg. 3's fed
    queue stays at the worker's last accepted state (7 tasks), not 2^53 - 1."""
    policy = MdiExitPolicy({1: 0.8, 2: 0.8, 3: 0.8}, {"admission_control": True})
    parts = source_parts(tmp_path, policy)
    try:
        node = Node(parts.cfg, parts.transport, policy, parts.view, parts.out, parts.side,
                    NodeStatus(parts.cfg, policy, parts.view, parts.out.counters))
        node._on_control(_state(sender="w1", input_queue=4, output_queue=3))
        assert node.outbox.counters.get("drop_bad_payload", 0) == 0
        assert policy._fed_queue(node.view) == 7
        node._on_control(_state(sender="w1", input_queue=2 ** 53 - 1))
        assert node.outbox.counters["drop_bad_payload"] == 1
        assert policy._fed_queue(node.view) == 7
    finally:
        parts.close()
