"""A node config's binds and peers are compared by the machine's rule
(``agent.config.addr_machine``), not by their text: one address written two ways
(``[::ffff:127.0.0.1]`` is 127.0.0.1, ``[0:0:0:0:0:0:0:1]`` is ``[::1]``) on one port is one
endpoint, ``0.0.0.0`` takes an IPv4-mapped address's port, and a peer that a connect to this
machine reaches on one of the node's wildcard binds (``tcp://localhost:P`` next to
``tcp://*:P``) is the node itself. Each is refused where the config is read, in one line naming
both fields, rather than failing at start-up with "Address already in use" or talking to itself."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import zmq

from agent.cli import main
from agent.config.node import ConfigError, dump_config, parse_config
from agent.errors import EXIT_CONFIG
from agent.config.addr_machine import connect_reaches_bind
from agent.net.addrfamily import wants_ipv6
from agent.testbed.ports import free_ports
from tests.unit.endpoints import has_ipv6_loopback
from tests.unit.source_fields import source_fields

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT_MS = 30000  # a loopback message arrives in microseconds; this only ends a broken run
needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1)")


def _socket(ctx: zmq.Context, kind: int, endpoint: str, bind: bool) -> zmq.Socket:
    """A socket with the IPV6 option the agent gives ``endpoint`` (``agent.net.addrfamily``)."""
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.IPV6, int(wants_ipv6(endpoint, bind=bind, wait_s=5.0)))
    return s


def _both_bind(first: str, second: str) -> bool:
    """Whether real ZeroMQ sockets, made as the agent makes them, bind both endpoints."""
    ctx = zmq.Context()
    socks = [_socket(ctx, zmq.ROUTER, ep, True) for ep in (first, second)]
    try:
        socks[0].bind(first)
        try:
            socks[1].bind(second)
        except zmq.ZMQError:
            return False
        return True
    finally:
        for s in socks:
            s.close()
        ctx.term()


SAME_ADDRESS = [("127.0.0.1", "[::ffff:127.0.0.1]"),
                pytest.param("[::1]", "[0:0:0:0:0:0:0:1]", marks=needs_ipv6)]


@pytest.mark.parametrize("host_a,host_b", SAME_ADDRESS)
def test_one_address_written_two_ways_on_one_port_is_one_endpoint(tmp_path, host_a, host_b):
    """Rule: two planes on one address written two ways (an IPv4-mapped IPv6 address and its
    IPv4 one; an IPv6 address in full and short) and one port cannot both be bound (real
    sockets): refused at parse as the same endpoint, naming both fields and both texts."""
    port = free_ports(1)[0]
    control, data = "tcp://%s:%d" % (host_a, port), "tcp://%s:%d" % (host_b, port)
    assert not _both_bind(control, data)
    with pytest.raises(ConfigError) as err:
        parse_config(source_fields(str(tmp_path), control_bind=control, data_bind=data))
    assert str(err.value) == (
        "config.data_bind: the same endpoint as control_bind (%s): %s and %s bind one "
        "address; each plane needs its own" % (data, control, data))


def test_an_ipv4_wildcard_takes_the_port_of_an_ipv4_mapped_address(tmp_path):
    """Rule: ``0.0.0.0`` binds every IPv4 address, ``[::ffff:127.0.0.1]`` is one of them: the
    two on one port cannot both be bound (real sockets) and are refused at parse naming both
    fields and the wildcard."""
    port = free_ports(1)[0]
    control, data = "tcp://0.0.0.0:%d" % port, "tcp://[::ffff:127.0.0.1]:%d" % port
    assert not _both_bind(control, data)
    with pytest.raises(ConfigError) as err:
        parse_config(source_fields(str(tmp_path), control_bind=control, data_bind=data))
    assert str(err.value) == (
        "config.data_bind: %s and control_bind (%s) take the same port on this machine (a "
        "wildcard host binds every address): give each its own port" % (data, control))


def test_run_refuses_one_address_written_two_ways_before_binding(tmp_path):
    """Rule: ``edge-agent run`` on such a config exits with EXIT_CONFIG and the config's own
    line naming both fields, not "cannot bind ...: Address already in use" (which sends one
    looking for another process)."""
    port = free_ports(1)[0]
    control, data = "tcp://127.0.0.1:%d" % port, "tcp://[::ffff:127.0.0.1]:%d" % port
    text = dump_config(parse_config(source_fields(str(tmp_path), control_bind=control)))
    path = tmp_path / "s1.toml"
    path.write_text(text.replace('\ndata_bind = "', '\ndata_bind = "%s"\n#' % data, 1))
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(path)],
                          cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)
    assert proc.returncode == EXIT_CONFIG
    assert "config.data_bind: the same endpoint as control_bind (%s)" % data in proc.stderr
    assert "Address already in use" not in proc.stderr


def _reaches(connect: str, bind: str) -> bool:
    """Whether a real DEALER connected to ``connect`` delivers to a ROUTER bound on ``bind``
    (made as the agent makes them)."""
    ctx = zmq.Context()
    router, dealer = _socket(ctx, zmq.ROUTER, bind, True), _socket(ctx, zmq.DEALER, connect,
                                                                   False)
    try:
        router.bind(bind)
        dealer.connect(connect)
        dealer.send(b"hello")
        return bool(router.poll(WAIT_MS)) and router.recv_multipart()[-1] == b"hello"
    finally:
        router.close()
        dealer.close()
        ctx.term()


SELF_PEERS = ["localhost", "127.0.0.1", pytest.param("[::1]", marks=needs_ipv6)]


@pytest.mark.parametrize("peer_host", SELF_PEERS)
def test_a_peer_on_this_machine_at_a_wildcard_bind_is_this_node(tmp_path, peer_host):
    """Rule: a connect to this machine (``localhost``, a loopback address) reaches a
    ``tcp://*:P`` bind of it (real sockets), so a peer whose address is that port is this node
    itself: refused at parse naming the peer's field and the bind it reaches."""
    port = free_ports(1)[0]
    bind, address = "tcp://*:%d" % port, "tcp://%s:%d" % (peer_host, port)
    assert _reaches(address, bind)
    own = source_fields(str(tmp_path), control_bind=bind)
    peer = dict(own["peers"][0], control_address=address)
    with pytest.raises(ConfigError) as err:
        parse_config(dict(own, peers=[peer]))
    assert str(err.value) == (
        "config.peers[0].control_address: %s is this node's own control_bind (%s): give the "
        "address of peer w1" % (address, bind))


def test_doctor_fails_node_config_on_a_peer_at_a_wildcard_bind(tmp_path, capsys):
    """Rule: ``doctor --config`` FAILs ``node config`` with the same line ``run`` exits 78 on
    for a peer at ``tcp://localhost:P`` next to ``control_bind = tcp://*:P`` (before, the agent
    started and dropped its own messages: "it says it is 's1'")."""
    port = free_ports(1)[0]
    bind, address = "tcp://*:%d" % port, "tcp://localhost:%d" % port
    text = dump_config(parse_config(source_fields(str(tmp_path), control_bind=bind)))
    path = tmp_path / "s1.toml"
    path.write_text(text.replace('\ncontrol_address = "', '\ncontrol_address = "%s"\n#'
                                 % address, 1))
    assert main(["doctor", "--config", str(path)]) != 0
    out = capsys.readouterr()
    assert ("FAIL node config: %s: config.peers[0].control_address: %s is this node's own "
            "control_bind (%s)" % (path, address, bind)) in out.out + out.err


@pytest.mark.parametrize("bind,peer_host", [("tcp://*:%d", "10.0.0.2"),
                                            ("tcp://0.0.0.0:%d", "[::1]"),
                                            ("tcp://127.0.0.2:%d", "127.0.0.3"),
                                            ("tcp://127.0.0.1:%d", "[::1]")])
def test_a_peer_on_one_port_that_may_be_another_machine_or_address_passes(tmp_path, bind,
                                                                         peer_host):
    """Rule: the same port on an address that is not surely this bind passes: another
    machine's (fleets reuse ports), IPv6 loopback next to an IPv4-only wildcard, another
    loopback address (a rehearsal gives each node its own 127.0.0.N)."""
    port = free_ports(1)[0]
    own = source_fields(str(tmp_path), control_bind=bind % port)
    peer = dict(own["peers"][0], control_address="tcp://%s:%d" % (peer_host, port))
    assert parse_config(dict(own, peers=[peer])).peers[0].control_address == \
        peer["control_address"]


@pytest.mark.parametrize("connect,bind,reaches", [
    ("localhost", "*", True), ("127.0.0.5", "*", True), ("::1", "*", True),
    ("127.0.0.5", "0.0.0.0", True), ("::1", "0.0.0.0", False), ("::", "0.0.0.0", False),
    ("::ffff:127.0.0.1", "127.0.0.1", True), ("LocalHost", "127.0.0.1", True),
    ("localhost", "::1", False), ("127.0.0.2", "127.0.0.1", False),
    ("10.0.0.2", "*", False), ("10.0.0.2", "10.0.0.2", True), ("Jetson-1", "jetson-1", True),
    ("jetson-1", "*", False)])
def test_which_connects_surely_reach_a_bind_of_this_machine(connect, bind, reaches):
    """Rule (``connect_reaches_bind``): a shared address or name, or this machine's loopback
    or unspecified address against a wildcard bind of its family; another address or a name
    may be another machine, and is not counted."""
    assert connect_reaches_bind(connect, bind, {}) is reaches
