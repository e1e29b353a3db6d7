"""The rate a topology carries: a maximum flow through workers and links from the sources'
shares, so that the testbed's "N% of capacity" loads are ones the network can carry."""

import pytest

from agent.testbed.carry import INF, FlowGraph, carried_tasks_s
from agent.testbed.topology import load_topology
from agent.testbed.topology_bundle import capacity_tasks_s
from agent.testbed.local import bundle_stages, default_remaining
from agent.testbed.driver import load_bundle_for

ONE_STAGE = dict(flops=[1.0], wire_in_bytes=[1.0], reach=[1.0])


def test_max_flow_is_the_smallest_cut():
    """Two paths of 3 and 2 joined by a cross edge of 1: 5 units."""
    g = FlowGraph()
    for a, b, c in (("s", "a", 3), ("s", "b", 2), ("a", "t", 2), ("b", "t", 3), ("a", "b", 1)):
        g.edge(a, b, c)
    assert g.max_flow("s", "t") == pytest.approx(5.0)
    g.edge("s", "t", INF)
    assert g.max_flow("s", "t") == INF


def test_a_fast_worker_behind_slow_links_carries_only_what_its_links_bring():
    """Worker a serves 40 tasks/s but its two links carry 10/s each; b serves 20/s on fast
    links: 40 tasks/s in all, not the 60 of the compute."""
    got = carried_tasks_s({"c1": 0.5, "c2": 0.5}, [("a", 1, 40.0), ("b", 1, 20.0)],
                          [("c1", "a", 10.0), ("c2", "a", 10.0), ("c1", "b", 1e6),
                           ("c2", "b", 1e6)], **ONE_STAGE)
    assert got == pytest.approx(40.0, rel=1e-6)


def test_a_source_can_use_only_its_own_links():
    """c1 sends 80% of the tasks but reaches only worker a, over a link of 8 tasks/s: the total
    is 10 tasks/s, though c2's worker could take 100."""
    got = carried_tasks_s({"c1": 0.8, "c2": 0.2}, [("a", 1, 100.0), ("b", 1, 100.0)],
                          [("c1", "a", 8.0), ("c2", "b", 1e6)], **ONE_STAGE)
    assert got == pytest.approx(10.0, rel=1e-6)


def test_later_stages_count_only_the_tasks_that_reach_them():
    """Stage 2 serves 10 subtasks/s, but only half the tasks reach it: 20 tasks/s; a link of
    unknown rate and a worker of unknown speed bound nothing."""
    got = carried_tasks_s({"c": 1.0}, [("a", 1, None), ("b", 2, 10.0)],
                          [("c", "a", None), ("a", "b", 1e9)],
                          flops=[1.0, 1.0], wire_in_bytes=[1.0, 1.0], reach=[1.0, 0.5])
    assert got == pytest.approx(20.0, rel=1e-6)
    assert carried_tasks_s({"c": 1.0}, [("a", 1, None)], [("c", "a", None)],
                           **ONE_STAGE) == INF


def test_the_slow_link_topology_loads_only_what_its_slow_links_can_carry():
    """slow-link: w1a's two links carry 41.7 KB/s over a 3.57 KB image (11.7 tasks/s each) and
    w1b serves 20 tasks/s of stage 1, so the topology carries ~43 tasks/s, not the 60 of its
    compute; the default topology (fast links) is bounded by compute as before."""
    for name, lo, hi in (("slow-link", 42.0, 44.0), ("default", 50.0, 50.3)):
        topo = load_topology(name)
        bundle = load_bundle_for(topo)
        cap = capacity_tasks_s(topo, bundle_stages(bundle), default_remaining(topo, bundle))
        assert lo < cap < hi, (name, cap)
