"""An ``ipc://`` endpoint a live process serves is never taken over, and one config never binds
two planes at one endpoint.

ZeroMQ's ipc bind unlinks the file at the path and binds anew, so without a check a second
agent given a running agent's path would serve there while the first one sits unreachable.
The listeners here are real: ZeroMQ sockets bound in the test, a process killed with its file
left behind, and ``python -m agent run`` / ``doctor --config`` as processes or in-process CLI.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import zmq

from agent.cli import main
from agent.config.node import ConfigError, dump_config, parse_config
from agent.errors import EXIT_CONFIG
from agent.net import ipcbind
from agent.net.transport import Transport
from agent.ops.doctor_node import check_node
from engines.demo import DEMO_BUNDLE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT_S = 60.0  # a source's start on a loaded 2-core machine takes seconds, not a minute


@pytest.fixture
def short_dir():
    """A folder with a short path: an AF_UNIX socket path holds at most 107 bytes."""
    path = tempfile.mkdtemp(prefix="ipcb", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def _config(folder: str, **over) -> dict:
    obj = {"node_id": "s1", "role": "source", "stage": 0, "bundle": DEMO_BUNDLE_DIR,
           "state_dir": os.path.join(folder, "state"), "security": "none",
           "control_bind": "ipc://%s/c.sock" % folder, "data_bind": "ipc://%s/d.sock" % folder,
           "arrival_rate_tasks_s": 0.5, "drain_timeout_s": 1.0,
           "peers": [{"id": "w1", "stage": 1, "last_stage": 4,
                      "control_address": "ipc://%s/wc.sock" % folder,
                      "data_address": "ipc://%s/wd.sock" % folder}]}
    obj.update(over)
    return obj


def _reaches(ctx: zmq.Context, endpoint: str, server: zmq.Socket) -> bool:
    """True when a DEALER connecting to ``endpoint`` now delivers a message to ``server``."""
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    try:
        d.connect(endpoint)
        d.send(b"ping")
        return bool(server.poll(10000)) and server.recv_multipart()[-1] == b"ping"
    finally:
        d.close(linger=0)


def _router(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    r = ctx.socket(zmq.ROUTER)
    r.setsockopt(zmq.LINGER, 0)
    r.bind(endpoint)
    return r


# --- one config, one endpoint per plane ---------------------------------------------------

def test_control_and_data_bound_at_one_ipc_path_are_refused_naming_both_fields(short_dir):
    """Rule: ``data_bind`` at the ``ipc://`` path of ``control_bind`` is refused at parse, in
    one line naming both fields and the path; a relative path counts as the path it resolves
    to (taken from the config's folder)."""
    path = "ipc://%s/x.sock" % short_dir
    with pytest.raises(ConfigError) as err:
        parse_config(_config(short_dir, control_bind=path, data_bind="ipc://x.sock"), short_dir)
    assert str(err.value) == ("config.data_bind: the same endpoint as control_bind (%s): each "
                              "plane needs its own" % path)
    with pytest.raises(ConfigError, match="data_bind: the same endpoint as control_bind"):
        parse_config(_config(short_dir, control_bind=path,
                             data_bind="ipc://%s//x.sock" % short_dir), short_dir)


def test_a_client_endpoint_at_a_planes_path_is_refused_when_clients_are_served(short_dir):
    """Rule: with ``arrival = "client"`` the ``client_bind`` is a third bound endpoint and may
    not be the data plane's; without it no client socket is bound, so it is not compared."""
    data = "ipc://%s/d.sock" % short_dir
    with pytest.raises(ConfigError) as err:
        parse_config(_config(short_dir, arrival="client", client_bind=data), short_dir)
    assert str(err.value) == ("config.client_bind: the same endpoint as data_bind (%s): each "
                              "plane needs its own" % data)
    assert parse_config(_config(short_dir, client_bind=data), short_dir).client_bind == data


def test_one_tcp_address_for_two_planes_is_refused_at_parse_too(short_dir):
    """Rule: two planes at one tcp host and port (the host in any case) are refused at parse
    instead of failing at start-up as if another process held the port; wildcard ipc paths
    (``ipc://*``, a fresh path each) and distinct ports pass."""
    with pytest.raises(ConfigError, match=r"config\.data_bind: the same endpoint as "
                                          r"control_bind \(tcp://LocalHost:7101\)"):
        parse_config(_config(short_dir, control_bind="tcp://localhost:7101",
                             data_bind="tcp://LocalHost:7101"), short_dir)
    assert parse_config(_config(short_dir, control_bind="ipc://*", data_bind="ipc://*"))
    assert parse_config(_config(short_dir, control_bind="tcp://127.0.0.1:7101",
                                data_bind="tcp://127.0.0.1:7102"))


def test_doctor_config_fails_a_config_binding_two_planes_at_one_path(short_dir, capsys):
    """Rule: ``doctor --config`` fails the node-config check of such a config with the line
    ``run`` refuses it with, and exits non-zero."""
    path = os.path.join(short_dir, "s1.toml")
    with open(path, "w") as f:
        f.write(dump_config(parse_config(_config(short_dir), short_dir))
                .replace("/d.sock", "/c.sock"))
    checks, cfg = check_node(path)
    assert cfg is None
    assert checks[0].name == "node config" and checks[0].status == "FAIL"
    assert "data_bind: the same endpoint as control_bind (ipc://%s/c.sock)" % short_dir \
        in checks[0].detail
    assert main(["doctor", "--config", path]) != 0
    assert "the same endpoint as control_bind" in capsys.readouterr().out


# --- at bind time: a live socket is not taken over ----------------------------------------

def test_a_transport_binding_a_path_a_live_socket_serves_fails_and_leaves_it_served(
        short_dir, ctx):
    """Rule: binding an ``ipc://`` path another socket listens on raises EADDRINUSE (as a tcp
    port in use does) and leaves the file to that socket: a peer connecting afterwards still
    reaches it."""
    data = "ipc://%s/d.sock" % short_dir
    live = _router(ctx, data)
    t = Transport(ctx, "thief", "ipc://%s/c.sock" % short_dir, data, [])
    try:
        with pytest.raises(zmq.ZMQError) as err:
            t.open()
        assert err.value.errno == errno.EADDRINUSE
        assert "control" in t.bound and "data" not in t.bound
    finally:
        t.close()
    assert _reaches(ctx, data, live)


def test_run_exits_78_naming_the_endpoint_another_process_serves(short_dir, ctx):
    """Rule: ``run`` whose ``data_bind`` path another process serves exits 78 with one line
    naming data_bind, the endpoint and that another process serves on it (not "free the
    port"); that process keeps its path."""
    cfg = parse_config(_config(short_dir), short_dir)
    path = os.path.join(short_dir, "s1.toml")
    with open(path, "w") as f:
        f.write(dump_config(cfg))
    live = _router(ctx, cfg.data_bind)
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", path], cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=WAIT_S)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "error:" in x]
    assert ("data_bind: cannot bind %s: another process serves on this path (stop it or give "
            "this node its own path)" % cfg.data_bind) in line, line
    assert "free the port" not in line
    assert _reaches(ctx, cfg.data_bind, live)


def test_doctor_config_warns_of_an_ipc_bind_another_process_serves(short_dir, ctx):
    """Rule: ``doctor --config`` WARNs "node endpoints" naming data_bind and its endpoint while
    another process serves that path (``run`` would exit 78), and gives no such line once the
    path is free again (a stale socket file, which ``run`` replaces)."""
    cfg = parse_config(_config(short_dir), short_dir)
    path = os.path.join(short_dir, "s1.toml")
    with open(path, "w") as f:
        f.write(dump_config(cfg))
    live = _router(ctx, cfg.data_bind)
    (line,) = [c for c in check_node(path)[0] if c.name == "node endpoints"]
    assert line.status == "WARN" and ("data_bind %s: another process serves there"
                                      % cfg.data_bind) in line.detail, line
    live.close(linger=0)
    deadline = time.monotonic() + 30.0  # libzmq closes the listener on its own thread
    while ipcbind.served(ipcbind.ipc_path(cfg.data_bind)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [c for c in check_node(path)[0] if c.name == "node endpoints"]


def test_an_abstract_name_in_use_is_refused_by_zeromq_itself(ctx):
    """Rule: an abstract-namespace name (``ipc://@NAME``) has no file to unlink: ZeroMQ's own
    bind fails with EADDRINUSE, which the transport passes on unchanged."""
    name = "ipc://@edge-agent-test-%d" % os.getpid()
    live = _router(ctx, name)
    t = Transport(ctx, "thief", name, "ipc://@edge-agent-test-d-%d" % os.getpid(), [])
    try:
        with pytest.raises(zmq.ZMQError) as err:
            t.open()
        assert err.value.errno == errno.EADDRINUSE
    finally:
        t.close()
    assert _reaches(ctx, name, live)


# --- a file nobody serves is bound as before ----------------------------------------------

def test_a_socket_file_left_by_a_killed_agent_is_bound_again(short_dir, ctx):
    """Rule: a socket file whose process was killed (SIGKILL: nothing removed it) refuses
    connections, so the bind goes ahead and replaces it, as a restarted agent needs."""
    data = "ipc://%s/d.sock" % short_dir
    code = ("import os, signal, zmq; s = zmq.Context().socket(zmq.ROUTER); s.bind(%r); "
            "print('bound', flush=True); os.kill(os.getpid(), signal.SIGKILL)" % data)
    gone = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          universal_newlines=True, timeout=WAIT_S)
    assert gone.returncode == -signal.SIGKILL and gone.stdout.strip() == "bound"
    assert os.path.exists(data[len("ipc://"):])  # left behind
    t = Transport(ctx, "w1", "ipc://%s/c.sock" % short_dir, data, [])
    try:
        t.open()
        assert t.bound["data"] == data
        assert _reaches(ctx, data, t.router)
    finally:
        t.close()


def test_a_socket_this_process_just_closed_is_bound_again(short_dir, ctx):
    """Rule: a listener closed an instant ago (libzmq closes it on its own thread, so it may
    still accept for a moment) is not taken for a live one: the new bind succeeds."""
    data = "ipc://%s/d.sock" % short_dir
    for _ in range(3):
        old = _router(ctx, data)
        old.close(linger=0)
        t = Transport(ctx, "w1", "ipc://%s/c.sock" % short_dir, data, [])
        try:
            t.open()
            assert _reaches(ctx, data, t.router)
        finally:
            t.close()


def test_files_that_are_no_listening_socket_are_not_served(short_dir):
    """Rule: a regular file, a missing path and a socket file with no listener are not
    served (ZeroMQ replaces them as before); a listening AF_UNIX socket is."""
    regular = os.path.join(short_dir, "plain")
    open(regular, "w").close()
    bare = os.path.join(short_dir, "bare.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(bare)
    try:
        assert not ipcbind.served(regular)
        assert not ipcbind.served(os.path.join(short_dir, "none.sock"))
        assert not ipcbind.served(bare)  # bound, not listening: connections refused
        s.listen(1)
        assert ipcbind.served(bare)
    finally:
        s.close()
    assert ipcbind.ipc_path("ipc://@name") == "" and ipcbind.ipc_path("ipc://*") == ""
    assert ipcbind.ipc_path("tcp://127.0.0.1:1") == ""


def test_an_ipc_path_held_aside_by_a_live_agent_is_refused(short_dir):
    """Rule: a client path a source holds aside near the open-file limit (``.NAME.full``,
    still listened on) counts as served: a second agent binding the same endpoint meanwhile is
    refused (EADDRINUSE) instead of taking a path the first one would then fail to put back."""
    path = os.path.join(short_dir, "client.sock")
    ctx = zmq.Context()
    first = ctx.socket(zmq.ROUTER)
    try:
        first.bind("ipc://" + ipcbind.aside_path(path))
        with pytest.raises(zmq.ZMQError) as exc:
            ipcbind.refuse_served("ipc://" + path, grace_s=0.0)
        assert exc.value.errno == errno.EADDRINUSE
        assert not os.path.exists(path)
    finally:
        first.close(0)
        ctx.term()
    ipcbind.refuse_served("ipc://" + path, grace_s=0.0)  # nothing listens any more: free
