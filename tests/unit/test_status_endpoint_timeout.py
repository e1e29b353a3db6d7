"""`edge-agent status --endpoints` reads each endpoint once per round, within --timeout: the
read that gives a node's figures also names it (the ``node`` label it serves), so an endpoint
that does not answer costs one --timeout, together with the others, and never a second read
of its own. Real sockets on loopback and real agents' metrics endpoints."""

from __future__ import annotations

import pytest

from agent.fleet.status import fleet_status, format_status, nodes_from_endpoints
from agent.ops.metrics import AgentMetrics
from tests.unit.stub_endpoint import StubEndpoint


@pytest.fixture
def endpoints():
    made = []

    def make(body=None):
        made.append(StubEndpoint(body))
        return made[-1]

    yield make
    for e in made:
        e.close()


@pytest.fixture
def agents():
    made = []

    def make(node, role, stage):
        m = AgentMetrics(node)
        m.node_info(role, stage, "dtoee")
        made.append(m)
        return "127.0.0.1:%d" % m.serve("127.0.0.1", 0)

    yield make
    for m in made:
        m.close()


def test_endpoint_entries_are_made_without_reading_them(endpoints):
    """Rule: ``nodes_from_endpoints`` reads nothing (its names come with the status read,
    within --timeout): a silent endpoint is not connected to, and is keyed by the text given."""
    silent = endpoints()
    nodes = nodes_from_endpoints([silent.text])
    assert nodes == {silent.text: {"metrics": "http://%s/metrics" % silent.text,
                                   "named_by_answer": True, "keyed_by_answer": True}}
    assert silent.accepted == 0


def test_each_silent_endpoint_is_read_once_per_round(endpoints):
    """Rule: a round reads each endpoint once: five silent endpoints are each connected to
    once (a name read before the status read connected twice, the first with a fixed 2 s
    whatever --timeout said), and each is its own row keyed by the endpoint given."""
    silent = [endpoints() for _ in range(5)]
    status = fleet_status(nodes_from_endpoints([e.text for e in silent]), 0.5)
    assert [e.accepted for e in silent] == [1] * 5
    assert list(status) == [e.text for e in silent]
    assert not any(s["alive"] for s in status.values())


def test_answering_endpoints_are_named_by_the_node_they_serve(agents, endpoints):
    """Rule: an endpoint that answers is keyed by its ``node`` label, in the order given, with
    its figures; one that does not keeps the text given; the table says so."""
    w1 = agents("w1", "worker", 1)
    src = agents("src", "source", 0)
    silent = endpoints()
    status = fleet_status(nodes_from_endpoints([w1, "http://%s/metrics" % src, silent.text]),
                          0.5)
    assert list(status) == ["w1", "src", silent.text]
    assert status["w1"]["alive"] and status["w1"]["role"] == "worker"
    assert status["w1"]["stage"] == "1"
    assert status["src"]["alive"] and status["src"]["role"] == "source"
    assert not status[silent.text]["alive"]
    table = format_status(status)
    assert "2/3 nodes answering" in table
    assert "%s: timed out" % silent.text in table


def test_an_agent_without_node_info_is_named_by_its_series(endpoints):
    """Rule: an agent of an earlier version (no ``edge_agent_node_info``) is named by the
    ``node`` label its other series carry."""
    old = endpoints(b'edge_agent_tasks_in_total{node="w7",stage="2"} 3\n')
    status = fleet_status(nodes_from_endpoints([old.text]), 5.0)
    assert list(status) == ["w7"]
    assert status["w7"]["alive"] and status["w7"]["tasks_in"] == 3


def test_two_endpoints_answering_as_one_node_are_both_shown(agents):
    """Rule: two endpoints answering as the same node (a tunnel and its direct port) are two
    rows: the first named by the node, the second by the endpoint given; neither hides the
    other."""
    w1 = agents("w1", "worker", 1)
    twin = agents("w1", "worker", 1)
    status = fleet_status(nodes_from_endpoints([w1, twin]), 5.0)
    assert list(status) == ["w1", twin]
    assert all(s["alive"] for s in status.values())
