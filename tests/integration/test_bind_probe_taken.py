"""A worker whose control or data port another process holds, with real ``python -m agent``
processes on loopback: ``run`` exits 78 on it before it loads or times any engine, and
``doctor --config`` FAILs it; a restart over the last run's TIME_WAIT connections starts."""

from __future__ import annotations

import errno
import socket

import pytest
import zmq

from agent.ops.doctor import WARN
from agent.ops.doctor_node import check_node

from .agent_cluster import build_two_stage_bundle
from .taken_port import agent_cli, refused_before_loading, taken, timed_worker

TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


@pytest.mark.parametrize("plane", ["control", "data"])
def test_run_with_a_taken_bind_port_exits_78_before_any_engine_is_loaded_or_timed(
        bundle, tmp_path, plane):
    """Rule: a worker's ``run`` whose control or data port a plain socket listens on exits 78
    with the one line ``PLANE_bind: cannot bind tcp://127.0.0.1:PORT: Address already in use
    (free the port or change the address)`` before the slow steps: no engine was loaded (no
    providers line), none timed (no capacity line) and engines.json was not written (it was,
    and they were, before)."""
    c, cfg, path = timed_worker(tmp_path, bundle)
    port = c.ports["w1"][0 if plane == "control" else 1]
    with taken(port):
        done = agent_cli("run", "--config", path)
    errors = refused_before_loading(done, cfg)
    assert errors[0].endswith("%s_bind: cannot bind tcp://127.0.0.1:%d: Address already in use "
                              "(free the port or change the address)" % (plane, port)), errors


def test_doctor_config_fails_a_taken_control_port(bundle, tmp_path):
    """Rule: ``doctor --config`` of a node whose control port another process listens on
    prints ``FAIL node binds`` with run's line and a fix naming the port, and exits 1; with
    the port free it prints no such line."""
    c, _, path = timed_worker(tmp_path, bundle)
    port = c.ports["w1"][0]
    with taken(port):
        done = agent_cli("doctor", "--config", path)
    lines = done.stdout.splitlines()
    (i,) = [n for n, x in enumerate(lines) if x.startswith("FAIL node binds: ")]
    assert ("control_bind: cannot bind tcp://127.0.0.1:%d: Address already in use" % port
            in lines[i]), lines[i]
    assert lines[i + 1].lstrip().startswith("fix: stop the process that holds port %d"
                                            % port), lines[i + 1]
    assert done.returncode == 1, done.stdout[-3000:]
    checks, _ = check_node(path)
    assert [x.name for x in checks if x.name == "node binds"] == []


def test_a_restart_over_the_last_runs_time_wait_connections_serves(bundle, tmp_path):
    """Rule: a worker stopped while a peer was connected to its data port leaves that
    connection in TIME_WAIT on the port (a bind without SO_REUSEADDR is refused there); the
    worker started again at once is not refused: it serves. While it runs, ``doctor
    --config`` WARNs (not FAILs) its ports, naming its pid."""
    c, cfg, path = timed_worker(tmp_path, bundle)
    port = c.ports["w1"][1]
    ctx = zmq.Context()
    peer = ctx.socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    mon = peer.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        first = c.agents.start(["w1"], ready_timeout_s=TIMEOUT_S)[0]
        peer.connect("tcp://127.0.0.1:%d" % port)
        assert mon.poll(int(TIMEOUT_S * 1000)), "the peer's handshake with w1"
        checks, _ = check_node(path)
        (binds,) = [x for x in checks if x.name == "node binds"]
        assert binds.status == WARN and "pid %d" % first.pid in binds.detail, binds
        assert first.stop(TIMEOUT_S) == 0  # w1 closes its side first: TIME_WAIT is w1's
        with socket.socket() as plain:
            with pytest.raises(OSError) as refused:
                plain.bind(("127.0.0.1", port))
        assert refused.value.errno == errno.EADDRINUSE  # the TIME_WAIT is there
        c.agents.start(["w1"], ready_timeout_s=TIMEOUT_S)  # READY=1: bound and serving
    finally:
        peer.disable_monitor()
        mon.close()
        peer.close()
        ctx.term()
        c.agents.stop_all()
        c.agents.close()
