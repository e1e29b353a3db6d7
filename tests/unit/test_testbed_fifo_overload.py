"""The ``fifo sim ms`` column is empty, as ``model ms`` is, for a routing that overloads a worker
or a link: its queue grows for as long as the simulation runs, so a mean would only say how long
that was."""

from agent.policies.model import wire_bytes
from agent.testbed.columns import fifo_sim_delay, model_delay
from agent.testbed.topology import parse_topology
from agent.testbed.topology_bundle import StageInfo

STAGES = [StageInfo(1e6, 1000.0, False)]
ROUTING = {"s1": {"w1": 1.0}}
WORKER_TASKS_S = 10.0  # w1's capacity: 1e7 FLOP/s over 1e6 FLOP a task


def topology(link_tasks_s):
    """One source and one stage-1 worker (10 tasks/s) behind a link carrying ``link_tasks_s``."""
    rate = float(wire_bytes(STAGES[0].input_bytes)) * link_tasks_s
    return parse_topology({"sources": [{"id": "s1", "share": 1.0}],
                           "workers": [{"id": "w1", "stage": 1,
                                        "emulate_capacity_flops": 1e6 * WORKER_TASKS_S}],
                           "links": [{"from": "s1", "to": "w1", "rate_bytes_s": rate}]})


def test_fifo_sim_is_empty_when_the_worker_is_overloaded():
    """A load above the worker's capacity: no FIFO figure, like eq. 8's."""
    topo = topology(link_tasks_s=1000.0)
    assert model_delay(topo, STAGES, 1.5 * WORKER_TASKS_S, ROUTING, [1.0]) is None
    assert fifo_sim_delay(topo, STAGES, 1.5 * WORKER_TASKS_S, ROUTING, [1.0]) is None


def test_fifo_sim_is_empty_when_the_link_is_overloaded():
    """A load above the shaped link's rate (the worker keeps up): no FIFO figure either."""
    topo = topology(link_tasks_s=5.0)
    assert model_delay(topo, STAGES, 8.0, ROUTING, [1.0]) is None
    assert fifo_sim_delay(topo, STAGES, 8.0, ROUTING, [1.0]) is None


def test_fifo_sim_gives_a_delay_below_saturation():
    """Below every capacity the column holds the simulated mean delay, at least one service
    time (0.1 s of compute plus the link's transfer)."""
    topo = topology(link_tasks_s=100.0)
    got = fifo_sim_delay(topo, STAGES, 0.5 * WORKER_TASKS_S, ROUTING, [1.0])
    assert got is not None and got >= 1.0 / WORKER_TASKS_S
