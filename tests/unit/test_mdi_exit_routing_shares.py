"""`mdi-exit` decides task by task (Alg. 2), so the routing a node reports (``routing()``:
status, stats.json, the routing metric) is the shares of the tasks it sent lately, each
task's weight decaying by RECENT_DECAY per later one; nothing sent, nothing reported. Pure:
the policy and a NodeView, nothing started or timed."""

from __future__ import annotations

import pytest

from agent.policies.mdi_exit.agent import RECENT_DECAY
from tests.unit.test_mdi_exit_agent import TASK, policy, view


def test_a_node_that_sent_nothing_reports_no_routing():
    """Rule: before any task is sent the routing is empty (as before: nothing to show)."""
    assert policy().routing() == {}


def test_the_routing_is_the_decayed_shares_of_the_tasks_sent():
    """Rule: 10 tasks to a (b's queue longer), then 10 to b (a's longer): the shares are the
    decayed counts' shares, b's the larger (its tasks are the more recent), summing to 1."""
    p = policy()
    # a long output queue (20): each task sent counts on its receiver's queue until that
    # neighbour's next state, so the receiver stays below it for all ten
    to_a = view(output_queue=20, peers={"a": (0, 0.1), "b": (50, 0.1)})
    to_b = view(output_queue=20, peers={"a": (50, 0.1), "b": (0, 0.1)})
    for _ in range(10):
        assert p.choose_successor(TASK, to_a) == "a"
    for _ in range(10):
        assert p.choose_successor(TASK, to_b) == "b"
    b = sum(RECENT_DECAY ** k for k in range(10))
    a = RECENT_DECAY ** 10 * b
    shares = p.routing()
    assert shares == pytest.approx({"a": a / (a + b), "b": b / (a + b)})
    assert shares["b"] > shares["a"] and sum(shares.values()) == pytest.approx(1.0)


def test_a_task_kept_in_the_output_queue_moves_no_share():
    """Rule: Alg. 2 keeping the task (no neighbour better: None) changes nothing reported."""
    p = policy()
    assert p.choose_successor(TASK, view(output_queue=2, peers={"a": (1, 0.1)})) == "a"
    kept = view(output_queue=0, peers={"a": (9, 0.1)})
    assert p.choose_successor(TASK, kept) is None
    assert p.routing() == {"a": 1.0}
