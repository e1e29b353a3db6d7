"""`edge-agent status` tells a node whose metrics are off from a dead one (``agent.fleet.status``):
both leave their endpoint unanswered, but the nodes that answer say whom they hear
(``edge_agent_neighbour_alive``), and the line on a node they hear says so. Real metrics
endpoints on loopback ports; a refused one is a bound TCP port that does not listen."""

from __future__ import annotations

import json
import socket

import pytest

from agent.cli import main
from agent.ops.metrics import AgentMetrics


@pytest.fixture
def fleet(tmp_path):
    """A fleet.json of cam, fast (answering: cam hears fast and slow; fast hears cam and
    slow, not w2), slow (serving, its endpoint refused), w2 (dead, refused) and quiet (rendered
    with metrics_port = 0, heard by fast); the render folder."""
    started, held = [], []

    def endpoint(node, role, stage, hears):
        m = AgentMetrics(node)
        m.node_info(role, stage, "dtoee")
        for peer, alive in hears.items():
            m.neighbour_alive(peer, alive)
        started.append(m)
        return "http://127.0.0.1:%d/metrics" % m.serve("127.0.0.1", 0)

    def refused():
        sock = socket.socket()  # bound, never listening: a connection to it is refused, and
        sock.bind(("127.0.0.1", 0))  # no other process can take the port meanwhile
        held.append(sock)
        return "http://127.0.0.1:%d/metrics" % sock.getsockname()[1]

    nodes = {
        "cam": {"role": "source", "stage": 0,
                "metrics": endpoint("cam", "source", 0, {"fast": True, "slow": True})},
        "fast": {"role": "worker", "stage": 1,
                 "metrics": endpoint("fast", "worker", 1, {"cam": True, "slow": True,
                                                           "w2": False, "quiet": True})},
        "slow": {"role": "worker", "stage": 1, "metrics": refused()},
        "w2": {"role": "worker", "stage": 2, "metrics": refused()},
        "quiet": {"role": "worker", "stage": 2, "metrics": ""},
    }
    (tmp_path / "fleet.json").write_text(json.dumps({"nodes": nodes}))
    yield tmp_path
    for m in started:
        m.close()
    for sock in held:
        sock.close()


def _notes(out):
    return {line.split(":")[0]: line for line in out.splitlines()
            if line.split(":")[0] in ("slow", "w2", "quiet")}


def test_a_refused_node_its_neighbours_hear_is_named_as_running_not_dead(fleet, capsys):
    """Rule: slow's endpoint refuses, but cam and fast hear it: its line says they hear it and
    that its metrics are off or elsewhere; w2, heard by no one, keeps the bare refusal; exit
    status 1 still (a node did not answer)."""
    assert main(["status", "--fleet", str(fleet), "--timeout", "5"]) == 1
    notes = _notes(capsys.readouterr().out)
    assert notes["slow"].endswith("; but cam, fast hear it: the agent runs, its metrics off "
                                  "(metrics_port = 0) or on another port?")
    assert "refused" in notes["slow"].lower()
    assert "hear" not in notes["w2"] and "refused" in notes["w2"].lower()


def test_a_node_rendered_without_metrics_is_named_by_those_that_hear_it(fleet, capsys):
    """Rule: a node with no endpoint in the render (metrics_port = 0) says so, and who hears
    it: `quiet: no metrics endpoint (metrics_port = 0) (); fast hears it: the agent runs`."""
    main(["status", "--fleet", str(fleet), "--timeout", "5"])
    assert _notes(capsys.readouterr().out)["quiet"] == (
        "quiet: no metrics endpoint (metrics_port = 0) (); fast hears it: the agent runs")


def test_status_json_lists_who_hears_each_node_that_does_not_answer(fleet, capsys):
    """Rule: `--json` has `heard_by` for every node that does not answer ([] when no answering
    node hears it: dead, or cut off), and none for the nodes that answer."""
    main(["status", "--fleet", str(fleet), "--json", "--timeout", "5"])
    got = json.loads(capsys.readouterr().out)
    assert {n: s.get("heard_by") for n, s in got.items()} == {
        "cam": None, "fast": None, "slow": ["cam", "fast"], "w2": [], "quiet": ["fast"]}
