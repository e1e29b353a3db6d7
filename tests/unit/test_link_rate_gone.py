"""A link's measured rate leaves the metrics (``edge_agent_link_rate_bytes_per_second{peer}``)
and stats.json (``link_rate_bytes_s_<peer>``) when its peer is gone: after a worker's kill -9
its source had shown the dead link's last rate for minutes. The sender keeps the estimate for
the peer's return (the view plans with it, as with a rate saved before a restart)."""

from __future__ import annotations

import json

import numpy as np
from prometheus_client import generate_latest

from agent.net.links import MIN_SAMPLES, message_wire_bytes
from agent.net.transport import LINK_DOWN
from agent.node.hooks import NodeHooks
from agent.node.loop import Node
from agent.node.outitem import OutItem
from agent.node.status import NodeStatus
from agent.ops.metrics import AgentMetrics
from agent.policies.mdi_exit.agent import MdiExitPolicy
from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.unit.source_parts import source_parts

TENSOR = 20000  # bytes of each task's tensor
SERIES = 'edge_agent_link_rate_bytes_per_second{node="s1",peer="w1"}'


def _heard(node):
    """w1's queue state reaches the source: w1 is alive."""
    fields = dict(role="worker", stage=1, capacity_flops=1e9, input_queue=0, output_queue=0,
                  service_time_s=0.1)
    node._on_control(wire.decode(wire.encode(Kind.QUEUE_STATE, "w1", fields)))


def _transfers(out, t, first=0):
    """``MIN_SAMPLES`` + 1 tasks to w1 ACKed back to back on a 41.7 kB/s link; the time after."""
    x = np.zeros(TENSOR, dtype=np.uint8)
    for i in range(first, first + MIN_SAMPLES + 1):
        item = OutItem(Kind.TASK, "k%d" % i, {}, x, dest="w1", link_start=t)
        out.items[item.key] = item
        t += message_wire_bytes(TENSOR) / 41700.0
        out.on_ack("w1", [item.key], t + 1e-6)
    return t


def _series(metrics):
    return [line for line in generate_latest(metrics.registry).decode().splitlines()
            if line.startswith(SERIES)]


def test_a_dead_peers_link_rate_leaves_metrics_and_stats_and_comes_back_with_it(tmp_path):
    """Rule: on a real source node, w1's measured rate shows in both places while w1 lives;
    its data connection dropping (a killed process) takes the series and the stats key away
    at once, the estimate kept; heard again, the stats key is back, and the series with the
    next measured transfer."""
    policy = MdiExitPolicy({1: 0.8, 2: 0.8, 3: 0.8}, {"admission_control": True})
    parts = source_parts(tmp_path, policy)
    metrics = AgentMetrics("s1")
    parts.out.metrics = metrics  # the one metrics object build hands the outbox and the hooks
    try:
        parts.transport.open()  # bound on loopback: the node tells its neighbours of a lost route
        status = NodeStatus(parts.cfg, policy, parts.view, parts.out.counters)
        node = Node(parts.cfg, parts.transport, policy, parts.view, parts.out, parts.side,
                    status, NodeHooks(metrics=metrics))
        _heard(node)
        t = _transfers(parts.out, 100.0)
        assert len(_series(metrics)) == 1
        rate = status.stats()["counters"]["link_rate_bytes_s_w1"]
        assert abs(rate - 41700) < 100

        node._dispatch((LINK_DOWN, "w1", None))  # what the transport says when w1 dies
        assert "w1" not in parts.view.alive
        assert _series(metrics) == []
        assert "link_rate_bytes_s_w1" not in status.stats()["counters"]
        status.write(force=True)
        with open(tmp_path / "stats.json") as f:
            assert "link_rate_bytes_s_w1" not in json.load(f)["counters"]
        assert abs(parts.view.link_rate_bytes_s["w1"] - 41700) < 100  # kept for its return

        _heard(node)
        assert status.stats()["counters"]["link_rate_bytes_s_w1"] == rate
        assert _series(metrics) == []  # nothing measured since the return yet
        _transfers(parts.out, t + 5.0, first=100)
        assert len(_series(metrics)) == 1
    finally:
        metrics.close()
        parts.close()


def test_a_rate_measured_while_its_peer_is_gone_is_not_shown():
    """Rule: a late ACK's rate for a peer marked gone sets no series; the rate lapsing
    (``link_rate_gone``) of a peer never measured is no error."""
    m = AgentMetrics("s1")
    m.neighbour_alive("w1", True)
    m.link_rate("w1", 5000.0)
    assert len(_series(m)) == 1
    m.neighbour_alive("w1", False)
    m.link_rate("w1", 5100.0)
    assert _series(m) == []
    m.link_rate_gone("w9")
    m.neighbour_alive("w1", True)
    m.link_rate("w1", 5200.0)
    assert _series(m) == [SERIES + " 5200.0"]
