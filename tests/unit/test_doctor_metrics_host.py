"""`doctor --config` checks ``metrics_host`` where ``metrics_port`` > 0 as the metrics server
binds it: a name that does not resolve, an interface name and ``*`` (which ZeroMQ binds take,
the HTTP server does not) are a FAIL naming metrics_host, as ``run`` exits 78 on them; a name
that resolves is said to; with metrics off nothing is checked. Real configs in tmp_path; each
verdict is held against a real bind of the metrics server (``make_server``) on that host."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import pytest

from agent.config.node import load_config
from agent.net import addrfamily
from agent.ops.doctor import FAIL, OK
from agent.ops.doctor_check import check_addresses
from agent.ops.doctor_node import check_node
from agent.ops.metrics_server import make_server
from agent.testbed.ports import free_ports
from engines.demo import DEMO_BUNDLE_DIR

NOWHERE = "nosuchhost.invalid"  # .invalid never resolves (RFC 6761)


def _config(tmp_path, metrics_host, metrics_port):
    """A source config of the demo bundle, binds and peer on 127.0.0.1, serving metrics on
    ``metrics_host:metrics_port`` (public, so that any host passes the loopback rule)."""
    p = free_ports(4)
    path = tmp_path / "cam.toml"
    path.write_text(
        'node_id = "cam"\nrole = "source"\nstage = 0\nbundle = "%s"\nstate_dir = "%s"\n'
        'security = "none"\npolicy = "cf"\ncontrol_bind = "tcp://127.0.0.1:%d"\n'
        'data_bind = "tcp://127.0.0.1:%d"\nmetrics_port = %d\nmetrics_host = "%s"\n'
        'metrics_public = true\n'
        '\n[[peers]]\nid = "w1"\nstage = 1\nlast_stage = 4\n'
        'control_address = "tcp://127.0.0.1:%d"\ndata_address = "tcp://127.0.0.1:%d"\n'
        % (DEMO_BUNDLE_DIR, tmp_path / "state", p[0], p[1], metrics_port, metrics_host,
           p[2], p[3]), encoding="utf-8")
    return str(path)


def _serves(host):
    """Whether the metrics server binds ``host`` (a free port)."""
    try:
        server = make_server(host, 0, BaseHTTPRequestHandler)
    except OSError:
        return False
    server.server_close()
    return True


def test_a_metrics_host_that_does_not_resolve_fails_doctor_as_it_fails_run(tmp_path,
                                                                          monkeypatch):
    """Rule: metrics_port > 0 and a metrics_host that does not resolve is a FAIL "node
    addresses" line naming metrics_host and the host, with the metrics fix; the metrics
    server cannot bind it (run exits 78); the steps after the line still run. The wait for
    the resolver is raised for this test: a machine whose DNS server is slow or unreachable
    answers for .invalid only after its own timeouts (a WARN at the 5 s default)."""
    monkeypatch.setattr(addrfamily, "RESOLVE_WAIT_S", 60.0)
    checks, _ = check_node(_config(tmp_path, NOWHERE, free_ports(1)[0]))
    names = [c.name for c in checks]
    assert names[:2] == ["node config", "node addresses"], names
    line = checks[1]
    assert line.status == FAIL, line
    assert line.detail.startswith("metrics_host %s: the host %s does not resolve" % (
        NOWHERE, NOWHERE)), line
    assert "run cannot serve metrics there (exits 78)" in line.detail
    assert line.fix.startswith("set metrics_host to an address of this machine"), line
    assert "node policy" in names
    assert not _serves(NOWHERE)


def test_metrics_off_leaves_metrics_host_unchecked(tmp_path):
    """Rule: with metrics_port = 0 the metrics server is not started, so its metrics_host is
    not checked: a config of addresses only gets no "node addresses" line."""
    checks, _ = check_node(_config(tmp_path, NOWHERE, 0))
    assert "node addresses" not in [c.name for c in checks]


@pytest.mark.parametrize("host", ["*", "lo"])
def test_star_and_an_interface_name_fail_as_the_metrics_server_refuses_them(tmp_path, host):
    """Rule: * and an interface name (lo), which a ZeroMQ bind takes, are no address to the
    metrics server: doctor FAILs metrics_host exactly where make_server cannot bind it."""
    line = check_addresses(load_config(_config(tmp_path, host, 9100)), wait_s=60)
    if _serves(host):  # a machine where "lo" is also a host name: then it serves
        assert line.status == OK, line
    else:
        assert line.status == FAIL and line.detail.startswith("metrics_host %s: " % host), line
        assert "exits 78" in line.detail


def test_a_metrics_host_name_that_resolves_is_said_to_and_passes(tmp_path):
    """Rule: a metrics_host name that resolves (localhost) is an OK line saying the family it
    serves on, and the metrics server binds it; an IP address needs no line."""
    line = check_addresses(load_config(_config(tmp_path, "localhost", 9100)), wait_s=60)
    assert line.status == OK, line
    assert line.detail.startswith("metrics_host localhost: host localhost: serves on its "), line
    assert _serves("localhost")
    assert check_addresses(load_config(_config(tmp_path, "127.0.0.1", 9100))) is None
