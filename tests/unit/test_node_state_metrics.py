"""A node's life stage in its metrics (``edge_agent_node_state``) and in `edge-agent status`:
real metrics endpoints on loopback ports, read by the real ``status`` command."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from agent.config.node import NodeConfig
from agent.errors import UsageError
from agent.fleet.status import (fetch_text, fleet_status, format_status, parse_metrics,
                                summarise)
from agent.ops.metrics import NODE_STATES, AgentMetrics, serve_metrics
from agent.ops.metrics_server import url
from agent.ops.metrics_start import MetricsPort, serving
from agent.testbed.ports import free_ports


def _config(**kw) -> NodeConfig:
    base = dict(node_id="w1", role="worker", stage=1, bundle="b", state_dir="s",
                control_bind="tcp://127.0.0.1:7000", data_bind="tcp://127.0.0.1:7001",
                metrics_port=free_ports(1)[0])
    base.update(kw)
    return NodeConfig(**base)


def _text(port: int) -> str:
    """What the endpoint on loopback ``port`` serves."""
    return fetch_text(url("127.0.0.1", port), 10.0)


def _states(port: int) -> dict:
    """{state: value} of ``edge_agent_node_state`` as the endpoint on ``port`` serves it."""
    return {labels["state"]: v for labels, v in parse_metrics(_text(port))["node_state"]}


class _Loop:
    """The part of ``loop.Node`` a stop handler calls."""

    stopped = False

    def stop(self) -> None:
        self.stopped = True


def test_a_starting_node_answers_starting_then_serving_then_draining_at_a_stop():
    """Rule: ``MetricsPort`` serves the endpoint from start-up with
    ``edge_agent_node_state{state="starting"} 1`` (the other states at 0) and what the node is
    (``edge_agent_node_info``); ``serving`` makes it "serving", and the SIGTERM/SIGINT handler
    it returns makes it "draining" and stops the loop."""
    cfg = _config()
    with MetricsPort(cfg) as port:
        assert _states(cfg.metrics_port) == {"starting": 1.0, "serving": 0.0, "draining": 0.0}
        metrics = port.serve()
    try:
        assert metrics.port == cfg.metrics_port  # handed to the node: still served
        info = summarise(parse_metrics(_text(cfg.metrics_port)))
        assert (info["role_reported"], info["stage_reported"]) == ("worker", "1")
        loop = _Loop()
        on_stop = serving(loop, metrics)
        assert _states(cfg.metrics_port)["serving"] == 1.0 and not loop.stopped
        on_stop(15, None)
        assert loop.stopped and _states(cfg.metrics_port) == {
            "starting": 0.0, "serving": 0.0, "draining": 1.0}
    finally:
        metrics.close()


def test_the_first_scrape_of_a_starting_node_reads_starting():
    """Rule: the state is set before the endpoint listens (``serve_metrics(..., state)``), so
    no scrape of a starting node, however early, reads the "serving" an ``AgentMetrics``
    starts in."""
    cfg = _config()
    metrics = serve_metrics(cfg, None, "starting")
    try:
        assert metrics.state == "starting"
        assert _states(cfg.metrics_port) == {"starting": 1.0, "serving": 0.0, "draining": 0.0}
    finally:
        metrics.close()


def test_a_second_starting_agent_on_the_same_metrics_port_fails_at_once():
    """Rule: while one agent starts (its endpoint served from right after its lock), another
    agent's start on the same metrics_port fails at once with the exit-78 line: a bind held
    without listening let a second agent bind the port too (SO_REUSEADDR on both)."""
    cfg = _config()
    with MetricsPort(cfg):
        with pytest.raises(UsageError) as second:
            MetricsPort(_config(node_id="w2", metrics_port=cfg.metrics_port))
    assert str(second.value) == (
        "metrics_host/metrics_port: cannot serve metrics on http://127.0.0.1:%d/metrics: "
        "Address already in use (fix the address, free the port or set metrics_port = 0)"
        % cfg.metrics_port)


def test_a_start_up_fault_closes_the_endpoint_and_metrics_off_serves_nothing():
    """Rule: a start-up fault (an exception out of the ``with`` block) closes the endpoint
    even after ``serve`` (no node was returned to close it); metrics_port = 0: NullMetrics."""
    cfg = _config()
    with pytest.raises(RuntimeError):
        with MetricsPort(cfg) as port:
            metrics = port.serve()
            raise RuntimeError("a later start-up step failed")
    assert metrics.port is None
    with MetricsPort(_config(metrics_port=0)) as off:
        assert type(off.serve()).__name__ == "NullMetrics"


@pytest.fixture
def endpoints():
    """Serve one AgentMetrics per (node, role, state); {node: endpoint}."""
    started = []

    def start(nodes):
        out = {}
        for node, role, state in nodes:
            m = AgentMetrics(node)
            m.node_info(role, 0 if role == "source" else 1, "dtoee")
            m.node_state(state)
            started.append(m)
            out[node] = "127.0.0.1:%d" % m.serve("127.0.0.1", 0)
        return out

    yield start
    for m in started:
        m.close()


def test_status_shows_starting_and_draining_nodes_and_exits_1_until_all_serve(
        endpoints, capsys):
    """Rule: `status` shows a starting node's alive column as ``starting`` with a line saying it
    loads and does not serve yet, a draining node's as ``draining`` with a line saying it
    stops; ``--json`` carries each node's ``state``; the exit status is 1 while a node starts
    or drains (as while one does not answer) and 0 once every node serves."""
    eps = endpoints([("w1", "worker", "starting"), ("w2", "worker", "serving"),
                     ("w3", "worker", "draining"), ("s1", "source", "starting")])
    st = fleet_status({n: {"metrics": "http://%s/metrics" % ep} for n, ep in eps.items()})
    table = format_status(st).splitlines()
    alive = {ln.split()[0]: ln.split()[1] for ln in table[2:6]}
    assert alive == {"w1": "starting", "w2": "yes", "w3": "draining", "s1": "starting"}, table
    assert "4/4 nodes answering (1 draining, 2 starting);" in table[6], table
    assert "s1: starting: reading its bundle and replay set; not serving yet" in table, table
    assert ("w1: starting: loading and timing its stage engine(s) (a TensorRT plan build takes "
            "minutes); not serving yet") in table, table
    assert ("w3: draining: stopping; finishes the tasks it holds, refuses new ones, for up to "
            "its drain_timeout_s") in table, table
    assert main(["status", "--endpoints"] + list(eps.values())) == 1
    capsys.readouterr()
    assert main(["status", "--endpoints"] + list(eps.values()) + ["--json"]) == 1
    got = json.loads(capsys.readouterr().out)
    assert {n: (s["alive"], s["state"]) for n, s in got.items()} == {
        "w1": (True, "starting"), "w2": (True, "serving"), "w3": (True, "draining"),
        "s1": (True, "starting")}
    assert main(["status", "--endpoints", eps["w2"]]) == 0


def test_an_agent_without_the_state_series_is_taken_as_serving_and_no_answer_has_no_state():
    """Rule: an agent of an earlier version exports no ``edge_agent_node_state`` and answers
    only once it serves: its state is "serving"; a node that does not answer has state ""."""
    old = 'edge_agent_node_info{node="w1",role="worker",stage="1",policy="dtoee"} 1.0\n'
    assert summarise(parse_metrics(old))["state"] == "serving"
    port = free_ports(1)[0]
    st = fleet_status({"w9": {"metrics": "http://127.0.0.1:%d/metrics" % port}}, 5.0)
    assert st["w9"]["alive"] is False and st["w9"]["state"] == ""
    assert NODE_STATES == ("starting", "serving", "draining")
