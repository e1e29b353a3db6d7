"""`edge-agent status` shows the policy each agent says it runs (``edge_agent_node_info``'s
``policy`` label), in the table and in ``--json``, and one warning line under the table names
which nodes run what when they differ: a node restarted on mdi-exit among dtoee nodes had
shown nothing in `status`. Real agents' metrics endpoints, served on loopback ports."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from agent.fleet.status import fleet_status, format_status
from agent.ops.metrics import AgentMetrics

DTOEE_FLEET = [("s1", "source", 0, "dtoee"), ("w1a", "worker", 1, "dtoee"),
               ("w2a", "worker", 2, "mdi-exit"), ("w3a", "worker", 3, "dtoee")]


@pytest.fixture
def serving():
    """Start one metrics endpoint per (node, role, stage, policy); {node: endpoint}."""
    started = []

    def start(nodes):
        out = {}
        for node, role, stage, policy in nodes:
            m = AgentMetrics(node)
            if policy is not None:  # None: an agent that does not say what it is
                m.node_info(role, stage, policy)
            m.capacity(1e9)  # a series with its node label (`status --endpoints` names it)
            started.append(m)
            out[node] = "127.0.0.1:%d" % m.serve("127.0.0.1", 0)
        return out

    yield start
    for m in started:
        m.close()


def _status(endpoints):
    return fleet_status({n: {"metrics": "http://%s/metrics" % ep}
                         for n, ep in endpoints.items()})


def test_status_shows_each_nodes_policy_and_names_the_odd_one_under_the_table(serving):
    """Rule: a `policy` column holds each node's policy; nodes on different policies get one
    WARNING line under the table naming every node by policy, with the fix."""
    table = format_status(_status(serving(DTOEE_FLEET))).splitlines()
    assert table[0].split()[9:11] == ["tasks", "policy"]
    col = table[0].index("policy")
    assert {r.split()[0]: r[col:].split()[0] for r in table[2:6]} == {
        "s1": "dtoee", "w1a": "dtoee", "w2a": "mdi-exit", "w3a": "dtoee"}
    warned = [line for line in table if line.startswith("WARNING")]
    assert warned == ["WARNING: nodes run different policies: dtoee on s1, w1a, w3a; mdi-exit on "
                      "w2a; a fleet runs one policy (each drops the other's control messages): "
                      "render every node with one --policy and restart them all"]
    assert table.index(warned[0]) == len(table) - 1  # under the table and its legend


def test_one_policy_or_a_node_that_does_not_say_is_no_warning(serving):
    """Rule: a fleet on one policy has no warning line; an agent without the label (an
    earlier one) shows `-` and is not taken for a policy of its own, nor is a node that does
    not answer."""
    eps = serving([("s1", "source", 0, "dtoee"), ("w1a", "worker", 1, "dtoee"),
                   ("w2a", "worker", 2, None)])
    status = _status(eps)
    status["w9"] = {"alive": False, "error": "refused", "url": "http://h:1/metrics",
                    "policy": ""}
    table = format_status(status)
    assert "WARNING" not in table
    col = table.splitlines()[0].index("policy")
    assert [r for r in table.splitlines() if r.startswith("w2a ")][0][col:].split()[0] == "-"


def test_status_json_has_each_nodes_policy(serving, capsys):
    """Rule: `status --json` carries `policy` per node, as its agent says it (empty when it
    does not say)."""
    eps = serving(DTOEE_FLEET[:3] + [("w3a", "worker", 3, None)])
    assert main(["status", "--endpoints"] + list(eps.values()) + ["--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {n: s["policy"] for n, s in got.items()} == {
        "s1": "dtoee", "w1a": "dtoee", "w2a": "mdi-exit", "w3a": ""}
