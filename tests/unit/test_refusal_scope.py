"""Refusals about one source's tasks (agent.node.refusal_scope, agent.protocol.ack)."""

from __future__ import annotations

from agent.node.refusal_scope import SourceHolds, choose_successor, scope_of
from agent.policies.api import AgentPolicy, NodeView, TaskInfo
from agent.protocol import wire
from agent.protocol.ack import ack_fields
from agent.protocol.wire import Kind


def _view() -> NodeView:
    v = NodeView(node_id="w1", role="worker", stage=1, num_stages=2, stage_flops=(1.0, 1.0),
                 stage_input_bytes=(8.0, 8.0), exit_stages=(1,), successors=("w2", "w3"),
                 predecessors=("s1", "s2"), link_rate_bytes_s={})
    v.alive.update({"w2", "w3"})
    return v


def test_a_successor_held_off_for_one_source_is_left_out_for_that_sources_tasks_only():
    """Rule: a hold for source s1's tasks leaves the successor out when a task of s1 is routed,
    not when one of s2 is; the view's holds of every task are as they were afterwards."""
    holds, view, policy = SourceHolds(), _view(), AgentPolicy({1: 0.5}, {})
    holds.hold("w2", "s1", 10.0, "no_route")
    task = TaskInfo("t", 2, 8)
    assert {choose_successor(policy, task, view, (), holds.held_for("s1", 1.0))
            for _ in range(20)} == {"w3"}
    assert {choose_successor(policy, task, view, (), holds.held_for("s2", 1.0))
            for _ in range(40)} == {"w2", "w3"}
    assert view.unavailable == {} and holds.why("w2", "s1") == "no_route"
    assert holds.held_for("s1", 10.0) == {} and not holds  # ended holds are forgotten


def test_a_refusal_names_its_source_where_a_worker_has_more_than_one_or_for_no_route():
    """Rule: a worker of one source refuses an overload without naming it (every task it gets
    is its) and names it in a no_route refusal (the sender's hold on that source then grows
    while the source stays gone there); the ACK carries the source when named, and an ACK
    without it decodes as before."""
    assert scope_of("s1", {"s1"}) == "" and scope_of("s1", {"s1", "s2"}) == "s1"
    assert scope_of("s1", {"s1"}, "no_route") == "s1"
    scoped = wire.decode(wire.encode(Kind.ACK, "w2", ack_fields(["a#0"], "no_route", 0.2, "s1")))
    assert scoped.fields == {"keys": [], "refused": ["a#0"], "reason": "no_route",
                             "retry_s": 0.2, "source": "s1"}
    every = wire.decode(wire.encode(Kind.ACK, "w2", ack_fields(["a#0"], "overload", 0.1)))
    assert "source" not in every.fields and every.fields.get("source", "") == ""
    assert ack_fields(["b#0"]) == {"keys": ["b#0"]}
