"""The metrics endpoint listens on IPv6 addresses too (``agent.ops.metrics_server``): real HTTP
servers on this machine's loopback, scraped with urllib."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from agent.config.node import NodeConfig
from agent.ops.metrics import AgentMetrics, serve_metrics
from agent.ops.metrics_server import url
from agent.testbed.ports import free_ports
from tests.unit.endpoints import has_ipv6_loopback


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(),
                                reason="no IPv6 loopback (::1) on this machine")


def _scrape(host: str, port: int) -> bool:
    """True when http://HOST:PORT/metrics answers with the agent's series."""
    try:
        with urllib.request.urlopen(url(host, port), timeout=10) as r:
            return b"edge_agent_" in r.read()
    except (urllib.error.URLError, OSError):
        return False


@needs_ipv6
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_an_ipv6_loopback_metrics_host_is_served_there(host):
    """Rule: ``metrics_host = "::1"`` (or ``"[::1]"``) serves on ::1; only IPv6 scrapes
    reach it."""
    m = AgentMetrics("n1")
    try:
        port = m.serve(host, 0)
        assert _scrape("::1", port)
        assert not _scrape("127.0.0.1", port)
    finally:
        m.close()


@needs_ipv6
def test_the_ipv6_wildcard_takes_ipv4_scrapes_too():
    """Rule: ``metrics_host = "::"`` listens on IPv6 and IPv4 alike (dual stack)."""
    m = AgentMetrics("n1")
    try:
        port = m.serve("::", 0)
        assert _scrape("::1", port) and _scrape("127.0.0.1", port)
    finally:
        m.close()


def test_ipv4_hosts_are_served_as_before():
    """Rule: an IPv4 address or a name with an IPv4 address serves on IPv4."""
    for host in ("127.0.0.1", "localhost"):
        m = AgentMetrics("n1")
        try:
            port = m.serve(host, 0)
            assert _scrape("127.0.0.1", port), host
        finally:
            m.close()


@needs_ipv6
def test_a_node_config_with_metrics_host_ipv6_loopback_starts_its_endpoint(caplog):
    """Rule: a node config's loopback ``metrics_host = "::1"`` (no metrics_public needed) is
    served at start-up, and the start-up line names the URL with the address in brackets."""
    port = free_ports(1)[0]
    cfg = NodeConfig(node_id="n1", role="source", stage=0, bundle="b", state_dir="s",
                     control_bind="tcp://127.0.0.1:7000", data_bind="tcp://127.0.0.1:7001",
                     metrics_port=port, metrics_host="::1")
    with caplog.at_level("INFO", logger="agent.ops.metrics"):
        m = serve_metrics(cfg)
    try:
        assert m.port == port and _scrape("::1", port)
        assert "metrics on http://[::1]:%d/metrics" % port in caplog.text
    finally:
        m.close()
