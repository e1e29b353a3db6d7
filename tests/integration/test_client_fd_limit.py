"""A source's client socket at the open-file limit (``agent.net.acceptwatch``), in a child
process whose soft ``RLIMIT_NOFILE`` it sets itself (the limit is the process's own, so the
test runner keeps its own), serving a real transport and answering every client message.

libzmq's ipc:// listener aborts the process (SIGABRT, ``Too many open files
(src/ipc_listener.cpp:297)``) when it accepts a connection past the limit: a source whose
local clients opened connections past it died, and under systemd crash-looped. A tcp://
listener instead refuses without a word while its I/O thread spins."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import zmq

from agent.testbed.ports import free_ports

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = """
import logging, resource, signal, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
import zmq
from agent.net.transport import CLIENT, Transport
endpoint, soft = sys.argv[1], int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
ctx = zmq.Context()
t = Transport(ctx, "s1", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0", [], client_bind=endpoint)
t.open()
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
print("ready", flush=True)
while not stop:
    for tag, who, frames in t.poll(0.05):
        if tag == CLIENT:
            t.reply(who, [b"ok"], client=True)
t.close()
ctx.term()
print("closed", t.accepts.held_aside, flush=True)
"""


def _start(tmp_path, endpoint, soft):
    log = open(str(tmp_path / "child.log"), "w")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, endpoint, str(soft)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=log, universal_newlines=True)
    log.close()
    assert proc.stdout.readline().strip() == "ready", _log(tmp_path)
    return proc


def _log(tmp_path):
    with open(str(tmp_path / "child.log")) as f:
        return f.read()


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


def _until(what, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.05)
    return False


def _dealer(ctx, endpoint):
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.setsockopt(zmq.RECONNECT_IVL, 100)
    d.connect(endpoint)
    d.send(b"hello")  # queued until the connection is up
    return d


def _answered(d, path=""):
    """True once the client's answer came; False when ``path`` went missing first."""
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if d.poll(50):
            return d.recv() == b"ok"
        if path and not os.path.exists(path):
            return False
    raise AssertionError("no answer in 30 s while the endpoint's path was there")


def test_an_ipc_client_endpoint_is_held_aside_near_the_limit_and_the_agent_lives(tmp_path):
    """Rule: under a soft limit of 128, clients connecting one after another to an ipc://
    client endpoint are served until few descriptors are left; then its path is moved aside
    (WARNING naming the limit and LimitNOFILE), the process stays alive (no SIGABRT), and the
    clients already connected are still answered. Once clients leave, the path comes back
    (INFO) and a client that waited meanwhile is answered. A start-up WARNING says libzmq
    aborts an agent whose ipc:// client endpoint takes every descriptor."""
    path = str(tmp_path / "client.sock")
    endpoint = "ipc://" + path
    proc = _start(tmp_path, endpoint, 128)
    ctx = zmq.Context()
    served, waiting = [], None
    try:
        for _ in range(200):  # more clients than the limit has descriptors
            d = _dealer(ctx, endpoint)
            if not _answered(d, path):
                waiting = d
                break
            served.append(d)
        assert waiting is not None and 20 < len(served) < 128, (len(served), _log(tmp_path))
        assert proc.poll() is None, _log(tmp_path)
        assert not os.path.exists(path)
        served[0].send(b"again")  # a client connected before is still served
        assert _answered(served[0])
        for d in served[5:]:
            d.close()
        assert _answered(waiting), _log(tmp_path)
        assert os.path.exists(path)
    finally:
        for d in served[:5] + ([waiting] if waiting is not None else []):
            d.close()
        ctx.term()
        code, out = _stop(proc)
    text = _log(tmp_path)
    assert code == 0 and out.startswith("closed 1"), (code, out, text)
    assert "open-file limit 128 for the ipc:// client endpoint %s: libzmq aborts the agent" \
        % endpoint in text
    assert "WARNING agent.net.transport: client endpoint %s held aside from new clients: " \
        % endpoint in text and "of the open-file limit 128 in use" in text
    assert "raise LimitNOFILE= in the unit" in text
    assert "INFO agent.net.transport: client endpoint %s open to new clients again" \
        % endpoint in text


def test_a_tcp_client_endpoint_out_of_descriptors_says_so_and_again_when_free(tmp_path):
    """Rule: when clients take every descriptor under a soft limit of 64 on a tcp:// client
    endpoint (libzmq refuses them without a word), one WARNING `cannot accept client
    connections on ENDPOINT: Too many open files (limit 64, N in use, ...): raise
    LimitNOFILE=...` comes within seconds, not one per refused connection; once the clients
    leave, one INFO line says connections are accepted again."""
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    proc = _start(tmp_path, endpoint, 64)
    ctx = zmq.Context()
    clients = [_dealer(ctx, endpoint) for _ in range(100)]
    try:
        assert _until(lambda: "cannot accept client connections" in _log(tmp_path)), \
            _log(tmp_path)
        for d in clients:
            d.close()
        clients = []
        assert _until(lambda: "accepted again" in _log(tmp_path)), _log(tmp_path)
    finally:
        for d in clients:
            d.close()
        ctx.term()
        code, out = _stop(proc)
    text = _log(tmp_path)
    assert code == 0 and out.startswith("closed"), (code, out, text)
    lines = [ln for ln in text.splitlines() if "cannot accept client connections" in ln]
    assert len(lines) == 1, text
    assert lines[0].startswith("WARNING agent.net.transport: cannot accept client connections "
                               "on %s: Too many open files (limit 64, " % endpoint)
    assert "raise LimitNOFILE= in the unit" in lines[0]
    assert "INFO agent.net.transport: client connections on %s accepted again: " % endpoint \
        in text
