"""MDI-Exit's Alg. 3 at an agent source while the stage-1 node it feeds is gone: the node's
queues are unknown, not empty, so mu holds (agent/policies/mdi_exit/agent.py)."""

import pytest

from agent.policies.api import NodeView
from agent.policies.registry import make_policy


def source_view(alive, queue=0):
    """A source feeding stage-1 node ``n1`` (which publishes ``queue`` tasks in I_n)."""
    return NodeView(node_id="cam", role="source", stage=0, num_stages=3, last_stage=0,
                    peer_stages={"n1": (1, 3)}, stage_flops=(1e9, 1e9, 1e9),
                    stage_input_bytes=(1e4, 1e4, 1e4), exit_stages=(1, 2),
                    successors=("n1",), predecessors=(), link_rate_bytes_s={"n1": 1e6},
                    input_queue=0, output_queue=0, service_time_s=0.0,
                    alive={"n1"} if alive else set(),
                    peer_state={"n1": {"input_queue": queue, "output_queue": 0,
                                       "service_time_s": 0.05}})


def policy():
    return make_policy("mdi-exit", {1: 0.8, 2: 0.8},
                       {"admission_control": True, "initial_interarrival_s": 0.5}, seed=0)


def mu(p):
    return p.snapshot()["interarrival_s"]


def test_alg3_holds_mu_while_every_fed_stage1_node_is_gone():
    """Rule: Alg. 3 reads I_n + O_n of the node the source feeds; while that node is gone
    (its last QUEUE_STATE said 40 tasks) nothing can serve, so mu is not lowered by alpha
    as if the queues were empty: it stays where it was until the node is heard again."""
    p = policy()
    gone = source_view(alive=False, queue=40)
    for t in (0.0, 1.0, 2.0, 3.0, 4.0):
        p.on_tick(gone, t)
    assert mu(p) == 0.5
    back = source_view(alive=True, queue=40)  # heard again, its queue above T_Q2: back off
    p.on_tick(back, 5.0)
    assert mu(p) == pytest.approx(0.6)


def test_alg3_holds_mu_before_the_fed_node_is_first_heard():
    """Rule: a source started before its stage-1 node does not run Alg. 3 on a queue it has
    not heard (mu would fall by 20% a period towards ``min_interarrival_s`` meanwhile)."""
    p = policy()
    for t in (0.0, 1.0, 2.0, 3.0):
        p.on_tick(source_view(alive=False), t)
    assert mu(p) == 0.5
    p.on_tick(source_view(alive=True, queue=0), 4.0)  # heard, queue short: mu - alpha mu
    assert mu(p) == pytest.approx(0.4)
