"""What a node binds must not collide with itself or with files: a tcp:// wildcard host takes
its port on every address (so a second plane, or the metrics server, on that port fails at
start-up as if another process held it), and an ``ipc://`` bind deletes whatever file is at
its path. Both are refused before anything is bound, in one line naming the field."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from agent.config.node import ConfigError, dump_config, parse_config
from agent.errors import EXIT_CONFIG
from agent.node.preflight import preflight
from agent.ops.files import FileFault
from agent.testbed.ports import free_ports
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.source_fields import source_fields

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_wildcard_host_and_another_host_on_one_port_are_refused_naming_both(tmp_path):
    """Rule: ``tcp://*:P`` (or 0.0.0.0, [::]) and any host on port P cannot both be bound:
    refused at parse naming both fields and the port clash."""
    port = free_ports(1)[0]
    for wild in ("*", "0.0.0.0", "[::]"):
        with pytest.raises(ConfigError) as err:
            parse_config(source_fields(str(tmp_path), control_bind="tcp://%s:%d" % (wild, port),
                                 data_bind="tcp://127.0.0.1:%d" % port))
        assert str(err.value) == (
            "config.data_bind: tcp://127.0.0.1:%d and control_bind (tcp://%s:%d) take the same "
            "port on this machine (a wildcard host binds every address): give each its own port"
            % (port, wild, port))


def test_localhost_is_the_same_endpoint_as_127_0_0_1(tmp_path):
    """Rule: ``localhost`` binds 127.0.0.1, so the two names on one port are one endpoint."""
    port = free_ports(1)[0]
    with pytest.raises(ConfigError, match=r"^config\.data_bind: the same endpoint as "
                                          r"control_bind \(tcp://127\.0\.0\.1:%d\)" % port):
        parse_config(source_fields(str(tmp_path), control_bind="tcp://localhost:%d" % port,
                             data_bind="tcp://127.0.0.1:%d" % port))


def test_the_metrics_port_may_not_be_a_port_a_plane_binds(tmp_path):
    """Rule: ``metrics_port`` on a port a plane binds on its host (or on every address) is
    refused at parse naming metrics_port and the plane; another host's port passes."""
    port = free_ports(1)[0]
    with pytest.raises(ConfigError, match=r"^config\.metrics_port: tcp://127\.0\.0\.1:%d and "
                                          r"control_bind \(tcp://\*:%d\)" % (port, port)):
        parse_config(source_fields(str(tmp_path), control_bind="tcp://*:%d" % port,
                             metrics_port=port))
    with pytest.raises(ConfigError, match=r"^config\.metrics_port: the same endpoint as "
                                          r"data_bind \(tcp://127\.0\.0\.1:%d\)" % port):
        parse_config(source_fields(str(tmp_path), data_bind="tcp://127.0.0.1:%d" % port,
                             metrics_port=port, metrics_host="localhost"))
    cfg = parse_config(source_fields(str(tmp_path), control_bind="tcp://10.0.0.1:%d" % port,
                               metrics_port=port))
    assert cfg.metrics_port == port


def test_an_ipv4_wildcard_and_an_ipv6_host_on_one_port_pass(tmp_path):
    """Rule: 0.0.0.0 binds IPv4 addresses only, so [::1] on its port is no clash."""
    port = free_ports(1)[0]
    cfg = parse_config(source_fields(str(tmp_path), control_bind="tcp://0.0.0.0:%d" % port,
                               data_bind="tcp://[::1]:%d" % port))
    assert cfg.data_bind == "tcp://[::1]:%d" % port


def test_an_ipc_bind_path_holding_a_file_is_refused_and_the_file_kept(tmp_path):
    """Rule: a file or folder at an ``ipc://`` path the node binds is a start-up fault naming
    the field (the bind would delete it); a socket left there by an earlier run passes."""
    kept = tmp_path / "kept.txt"
    kept.write_text("data")
    cfg = parse_config(source_fields(str(tmp_path), arrival="client",
                                     client_bind="ipc://%s" % kept))
    with pytest.raises(FileFault, match=r"^client_bind: %s is a regular file, not a socket"
                       % kept):
        preflight(cfg)
    os.mkdir(str(tmp_path / "d"))
    cfg = parse_config(source_fields(str(tmp_path), data_bind="ipc://d"), str(tmp_path))
    with pytest.raises(FileFault, match=r"^data_bind: %s is a directory" % (tmp_path / "d")):
        preflight(cfg)
    old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old.bind(str(tmp_path / "c.sock"))
    old.close()  # a socket file nobody serves: an earlier run's
    preflight(parse_config(source_fields(str(tmp_path), control_bind="ipc://c.sock"),
                           str(tmp_path)))
    assert kept.read_text() == "data"


def test_run_with_a_bind_path_at_its_own_config_exits_78_and_keeps_the_file(tmp_path):
    """Rule: ``edge-agent run`` whose ``control_bind`` names a file (here its own config, by a
    relative path) exits with EXIT_CONFIG, one line naming control_bind, and the file stays."""
    path = tmp_path / "s1.toml"
    text = dump_config(parse_config(source_fields(str(tmp_path), control_bind="ipc://s1.toml"),
                                    str(tmp_path)))
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(path)],
                          cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)
    assert proc.returncode == EXIT_CONFIG
    assert "control_bind: %s is a regular file, not a socket" % path in proc.stderr
    assert path.read_text() == text


def test_a_worker_with_client_arrival_is_refused_naming_arrival(tmp_path):
    """Rule: ``arrival = "client"`` is a source's; a worker given it (which would bind a plain
    client socket, the loopback rule unchecked) is refused at parse naming arrival. A worker's
    unused ``client_bind`` under the default arrival still passes."""
    c, d, sc, sd = free_ports(4)
    worker = {"node_id": "w1", "role": "worker", "stage": 4, "bundle": DEMO_BUNDLE_DIR,
              "state_dir": str(tmp_path), "control_bind": "tcp://127.0.0.1:%d" % c,
              "data_bind": "tcp://127.0.0.1:%d" % d, "client_bind": "tcp://0.0.0.0:%d" % sc,
              "peers": [{"id": "s1", "stage": 0, "control_address": "tcp://127.0.0.1:%d" % sc,
                         "data_address": "tcp://127.0.0.1:%d" % sd}]}
    with pytest.raises(ConfigError, match=r'^config\.arrival: "client" is for a source'):
        parse_config(dict(worker, arrival="client"))
    assert parse_config(worker).arrival == "poisson"


def test_a_peer_at_one_of_the_nodes_own_endpoints_is_refused(tmp_path):
    """Rule: a peer whose address is an endpoint this node binds (compared as bound) would be
    this node itself: refused at parse naming the peer's field; the same port on another host
    (fleets reuse ports) passes."""
    c, d = free_ports(2)
    own = source_fields(str(tmp_path), control_bind="tcp://localhost:%d" % c,
                  data_bind="tcp://127.0.0.1:%d" % d)
    peer = own["peers"][0]
    with pytest.raises(ConfigError, match=r"^config\.peers\[0\]\.data_address: "
                                          r"tcp://127\.0\.0\.1:%d is this node's own "
                                          r"data_bind" % d):
        parse_config(dict(own, peers=[dict(peer, data_address="tcp://127.0.0.1:%d" % d)]))
    with pytest.raises(ConfigError, match=r"^config\.peers\[0\]\.control_address: "
                                          r"tcp://127\.0\.0\.1:%d is this node's own "
                                          r"control_bind" % c):
        parse_config(dict(own, peers=[dict(peer, control_address="tcp://127.0.0.1:%d" % c)]))
    sock = "ipc://%s" % (tmp_path / "c.sock")
    with pytest.raises(ConfigError, match=r"^config\.peers\[0\]\.control_address: .* is this "
                                          r"node's own control_bind"):
        parse_config(dict(own, control_bind=sock, peers=[dict(peer, control_address=sock)]))
    cfg = parse_config(dict(own, peers=[dict(peer, control_address="tcp://10.0.0.2:%d" % c,
                                             data_address="tcp://10.0.0.2:%d" % d)]))
    assert cfg.peers[0].data_address == "tcp://10.0.0.2:%d" % d
