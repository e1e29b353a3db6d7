"""`doctor --config` checks a node config's host names: a peer's ``control_address`` or
``data_address`` whose host does not resolve here is a WARN naming the field (the agent starts
but never reaches that peer), a bind on a name is checked with the family its socket takes
(an interface's IPv4 address where it has one; a name that gives no address: ``run`` cannot
bind it, a FAIL), and all names are resolved at once within a bounded time. Real configs in
tmp_path; real sockets where a bind is said to fail."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from agent.config.node import load_config
from agent.net.addrfamily import IPV4, IPV6
from agent.ops.doctor import FAIL, OK, WARN
from agent.ops.doctor_check import check_addresses
from agent.ops.doctor_node import check_node
from agent.testbed.ports import free_ports
from engines.demo import DEMO_BUNDLE_DIR

NOWHERE = "no-such-peer.invalid"  # .invalid never resolves (RFC 6761)


def _config(tmp_path, control_bind, data_bind, peer_control, peer_data):
    """A source config of the demo bundle with these binds and one peer at these addresses."""
    path = tmp_path / "cam.toml"
    path.write_text(
        'node_id = "cam"\nrole = "source"\nstage = 0\nbundle = "%s"\nstate_dir = "%s"\n'
        'security = "none"\npolicy = "cf"\ncontrol_bind = "%s"\ndata_bind = "%s"\n'
        '\n[[peers]]\nid = "w1"\nstage = 1\nlast_stage = 4\ncontrol_address = "%s"\n'
        'data_address = "%s"\n' % (DEMO_BUNDLE_DIR, tmp_path / "state", control_bind,
                                   data_bind, peer_control, peer_data), encoding="utf-8")
    return str(path)


def test_a_peer_address_that_does_not_resolve_is_a_warn_naming_the_field(tmp_path):
    """Rule: a peer whose control_address names a host that does not resolve gets a WARN
    "node addresses" line right after "node config", naming peers[0].control_address, the
    host and the peer, with the fix; its data_address (an IP address) is not named; the
    steps after it still run."""
    p = free_ports(4)
    path = _config(tmp_path, "tcp://127.0.0.1:%d" % p[0], "tcp://127.0.0.1:%d" % p[1],
                   "tcp://%s:%d" % (NOWHERE, p[2]), "tcp://127.0.0.1:%d" % p[3])
    checks, _ = check_node(path)
    assert [c.name for c in checks][:2] == ["node config", "node addresses"]
    line = checks[1]
    assert line.status == WARN and line.detail.startswith(
        "peers[0].control_address tcp://%s:%d: " % (NOWHERE, p[2])), line
    assert "data_address" not in line.detail and "cannot reach peer w1" in line.detail
    assert "DNS, /etc/hosts" in line.fix
    assert "node policy" in [c.name for c in checks]
    said = check_addresses(load_config(path), wait_s=60)  # as long as the resolver takes
    assert "the host %s does not resolve" % NOWHERE in said.detail, said


def test_a_config_of_addresses_only_gets_no_addresses_line(tmp_path):
    """Rule: binds on addresses or * and peers at addresses name no host: nothing to resolve,
    no line."""
    p = free_ports(4)
    path = _config(tmp_path, "tcp://*:%d" % p[0], "tcp://[::1]:%d" % p[1],
                   "tcp://127.0.0.1:%d" % p[2], "tcp://[::1]:%d" % p[3])
    assert "node addresses" not in [c.name for c in check_node(path)[0]]


def test_a_bind_name_is_checked_with_the_family_its_socket_takes(tmp_path):
    """Rule: a bind on interface lo (IPv4 and IPv6 addresses) listens on its IPv4 address
    (OK); a bind on a name that is no interface and does not resolve is a FAIL that run exits
    78 on (a real ZeroMQ bind on it fails), with the bind fix; a peer name that resolves is
    said to."""
    p = free_ports(4)
    path = _config(tmp_path, "tcp://lo:%d" % p[0], "tcp://%s:%d" % (NOWHERE, p[1]),
                   "tcp://localhost:%d" % p[2], "tcp://localhost:%d" % p[3])
    line = check_addresses(load_config(path), wait_s=60)
    assert line.status == FAIL
    assert "control_bind tcp://lo:%d: interface lo: listens on its IPv4 address" % p[0] \
        in line.detail, line
    assert ("data_bind tcp://%s:%d: the host %s does not resolve and no interface has that "
            "name: run cannot bind it (exits 78)" % (NOWHERE, p[1], NOWHERE)) in line.detail
    assert "the peers' host name localhost resolves" in line.detail
    assert line.fix.startswith("bind on an address of this machine, an interface name, or *")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    try:
        with pytest.raises(zmq.ZMQError):
            sock.bind("tcp://%s:%d" % (NOWHERE, p[1]))
    finally:
        sock.close(0)
        ctx.term()


def test_a_bind_name_with_ipv6_addresses_only_listens_on_ipv6():
    """Rule: a bind on a name that resolves to IPv6 addresses only takes IPv6 (wants_ipv6's
    rule), said as such (OK); one with both families takes IPv4."""
    from agent.config.node import NodeConfig

    fams = {"six-only.test": frozenset([IPV6]), "both.test": frozenset([IPV4, IPV6])}
    cfg = NodeConfig(node_id="cam", role="source", stage=0, bundle="b", state_dir="s",
                     control_bind="tcp://six-only.test:7000", data_bind="tcp://both.test:7001")
    line = check_addresses(cfg, wait_s=5, resolve=lambda h: fams.get(h, frozenset()))
    assert line.status == OK
    assert "control_bind tcp://six-only.test:7000: host six-only.test has IPv6 addresses " \
           "only: listens on IPv6" in line.detail, line
    assert "data_bind tcp://both.test:7001: host both.test: listens on its IPv4 address" \
        in line.detail, line


def test_a_resolver_that_hangs_holds_doctor_up_for_the_bound_only(tmp_path):
    """Rule: every name is resolved at once and doctor waits wait_s at most in all: with a
    resolver that takes 30 s per name, three names cost about wait_s (not 3 x 30 s), each
    said to take longer than that (WARN)."""
    release = threading.Event()

    def slow(host):
        release.wait(30)
        return frozenset([IPV4])

    p = free_ports(4)
    path = _config(tmp_path, "tcp://127.0.0.1:%d" % p[0], "tcp://127.0.0.1:%d" % p[1],
                   "tcp://slow-a.test:%d" % p[2], "tcp://slow-b.test:%d" % p[3])
    cfg = load_config(path)
    start = time.monotonic()
    try:
        line = check_addresses(cfg, wait_s=1.0, resolve=slow)
    finally:
        release.set()
    assert time.monotonic() - start < 15  # 1 s of waiting; room for a loaded machine
    assert line.status == WARN
    assert "peers[0].control_address tcp://slow-a.test:%d: resolving the host slow-a.test " \
           "takes longer than 1 s" % p[2] in line.detail, line
    assert "peers[0].data_address tcp://slow-b.test:%d" % p[3] in line.detail
