"""A metrics address another process holds is found before the slow start-up steps
(``agent.ops.metrics_start``) and by ``doctor --config`` (``agent.ops.doctor_metrics``): real
sockets on this machine's loopback, the port taken by a plain listening socket."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from agent.config.node import NodeConfig
from agent.errors import UsageError
from agent.ops.doctor import FAIL
from agent.ops.doctor_metrics import check_metrics_port
from agent.ops.metrics import serve_metrics
from agent.ops.metrics_server import url
from agent.ops.metrics_start import MetricsPort
from agent.testbed.ports import free_ports


def _config(**kw) -> NodeConfig:
    base = dict(node_id="n1", role="worker", stage=1, bundle="b", state_dir="s",
                control_bind="tcp://127.0.0.1:7000", data_bind="tcp://127.0.0.1:7001",
                metrics_port=free_ports(1)[0])
    base.update(kw)
    return NodeConfig(**base)


@pytest.fixture
def taken():
    """A port a plain socket listens on (as another program would)."""
    port = free_ports(1)[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen(1)
        yield port


def _scrape(port: int) -> str:
    """The endpoint's text; "refused" where nothing accepts the connection."""
    try:
        with urllib.request.urlopen(url("127.0.0.1", port), timeout=10) as r:
            return r.read().decode("utf-8")
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return "refused"
        raise


def test_holding_a_taken_metrics_port_fails_with_the_servers_own_line(taken):
    """Rule: ``MetricsPort`` (held by ``build`` before the engines load) raises the very line
    ``serve_metrics`` raises for a port in use: ``metrics_host/metrics_port: cannot serve
    metrics on http://127.0.0.1:P/metrics: Address already in use (fix ...)``."""
    cfg = _config(metrics_port=taken)
    with pytest.raises(UsageError) as held:
        MetricsPort(cfg)
    with pytest.raises(UsageError) as served:
        serve_metrics(cfg)
    assert str(held.value) == str(served.value)
    assert str(held.value) == (
        "metrics_host/metrics_port: cannot serve metrics on http://127.0.0.1:%d/metrics: "
        "Address already in use (fix the address, free the port or set metrics_port = 0)"
        % taken)


def test_a_starting_nodes_metrics_endpoint_answers_starting_and_keeps_the_port():
    """Rule: from right after the state_dir lock the node's metrics endpoint answers, saying
    the node is starting (``edge_agent_node_state``), and another socket cannot take the port;
    ``serve`` hands that same endpoint to the node; metrics_port = 0 serves nothing."""
    cfg = _config()
    port = MetricsPort(cfg)
    metrics = None
    try:
        assert 'edge_agent_node_state{node="n1",state="starting"} 1.0' in _scrape(
            cfg.metrics_port)
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", cfg.metrics_port))
        metrics = port.serve()
        assert metrics.port == cfg.metrics_port
        assert "edge_agent_node_info" in _scrape(cfg.metrics_port)
    finally:
        port.close()
        if metrics is not None:
            metrics.close()
    with MetricsPort(_config(metrics_port=0)) as off:
        assert type(off.serve()).__name__ == "NullMetrics"


def test_doctor_fails_a_taken_metrics_port_naming_it_and_the_fix(taken):
    """Rule: ``doctor --config``'s "node metrics" line is a FAIL for a metrics_port another
    process listens on, with run's exit-78 line and a fix naming the port and metrics_port
    = 0; no line where the port is free or metrics are off."""
    check = check_metrics_port(_config(metrics_port=taken))
    assert check is not None and check.name == "node metrics" and check.status == FAIL, check
    assert "http://127.0.0.1:%d/metrics: Address already in use" % taken in check.detail
    assert "run exits 78" in check.detail
    assert ("port %d" % taken) in check.fix and "metrics_port = 0" in check.fix, check.fix
    assert check_metrics_port(_config()) is None
    assert check_metrics_port(_config(metrics_port=0)) is None


def test_doctor_fails_a_metrics_host_that_is_no_address_of_this_machine():
    """Rule: a metrics_host address none of this machine's (192.0.2.1, a documentation
    address) cannot be bound: "node metrics" FAILs with run's line and the metrics_host fix;
    a host name that does not resolve is left to the "node addresses" line."""
    check = check_metrics_port(_config(metrics_host="192.0.2.1", metrics_public=True))
    assert check is not None and check.status == FAIL, check
    assert "cannot serve metrics on http://192.0.2.1:" in check.detail
    assert "metrics_host" in check.fix and "metrics_port = 0" in check.fix
    assert check_metrics_port(_config(metrics_host="no-such-host.invalid",
                                      metrics_public=True)) is None
