"""`edge-agent status` on a real worker through its life: starting (its engine loading), serving,
draining (after SIGTERM), with real ``python -m agent`` processes run as the unit runs them.

The worker is held at known points with real parts only: its sd_notify socket (what systemd
listens on) has a full queue, so a notification blocks until the test reads (the notification
before its engine load while it starts; the watchdog's or STOPPING=1 while it stops)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from agent.config.node import dump_config
from agent.fleet.status import read_node
from agent.ops.doctor import WARN
from agent.ops.doctor_node import check_node
from agent.ops.metrics_server import url
from agent.testbed.ports import free_ports

from .agent_cluster import REPO, Cluster, build_two_stage_bundle
from .test_startup_stop import HeldNotifySocket
from .test_systemd_agent import unit_command

WAIT_S = 120.0  # generous: a loaded 2-core machine starts onnxruntime slowly


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _status(port: int, *extra: str) -> subprocess.CompletedProcess:
    """``edge-agent status --endpoints 127.0.0.1:PORT EXTRA`` run to its end."""
    return subprocess.run([sys.executable, "-m", "agent", "status", "--endpoints",
                           "127.0.0.1:%d" % port, "--timeout", "10"] + list(extra), cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=WAIT_S)


def _row(done: subprocess.CompletedProcess) -> list:
    """The cells of the table's one node row."""
    return done.stdout.splitlines()[3].split()


def _fill(notify: HeldNotifySocket) -> None:
    """Take every free slot of the notify socket's queue: the agent's next one blocks."""
    while True:
        try:
            notify.tx.send(b"FILLER=1")
        except BlockingIOError:
            return


def _wait(proc: subprocess.Popen, cond, what: str, notify=None) -> None:
    """Poll ``cond`` until true (reading the notify queue meanwhile when ``notify``)."""
    end = time.monotonic() + WAIT_S
    while not cond():
        assert proc.poll() is None, "agent exited with %s before %s" % (proc.returncode, what)
        assert time.monotonic() < end, "timed out waiting for %s" % what
        if notify is not None:
            notify.drain()
        time.sleep(0.1)


def test_status_tells_a_starting_worker_and_a_draining_one_from_a_dead_or_serving_one(
        bundle, tmp_path):
    """Rule: a worker's metrics endpoint answers from right after its state-dir lock: while its
    engine loads, `status` shows it ``starting`` (a line says it loads and does not serve yet;
    ``--json`` state "starting") and exits 1, where a refused connection had made it look
    dead, and ``doctor --config`` names the port as served by this node's running agent (a
    WARN); once it serves, ``yes`` and exit 0; from SIGTERM until it ends, ``draining`` (a line
    says it stops; ``--json`` state "draining") and exit 1. The agent still exits 0."""
    port = free_ports(1)[0]
    cluster = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2})
    cfg = cluster.config("w1", metrics_port=port)
    os.makedirs(cfg.state_dir)
    cfg_path = str(tmp_path / "w1.toml")
    with open(cfg_path, "w") as f:
        f.write(dump_config(cfg))
    notify = HeldNotifySocket(str(tmp_path / "notify.sock"))
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, PYTHONUNBUFFERED="1", PYTHONPATH=REPO,
               OMP_NUM_THREADS="1")
    log_path = str(tmp_path / "w1.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(unit_command(cfg_path), stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd="/")
    endpoint = url("127.0.0.1", port)
    try:
        notify.held(proc)  # held before its engine load: it starts
        starting = _status(port)
        assert starting.returncode == 1, starting.stdout + starting.stderr
        assert _row(starting)[:4] == ["w1", "starting", "worker", "1"], starting.stdout
        assert "1/1 nodes answering (1 starting);" in starting.stdout
        assert ("w1: starting: loading and timing its stage engine(s) (a TensorRT plan build "
                "takes minutes); not serving yet" in starting.stdout), starting.stdout
        assert "Connection refused" not in starting.stdout
        as_json = json.loads(_status(port, "--json").stdout)["w1"]
        assert (as_json["alive"], as_json["state"]) == (True, "starting"), as_json
        (metrics,) = [x for x in check_node(cfg_path)[0] if x.name == "node metrics"]
        assert metrics.status == WARN and "pid %d" % proc.pid in metrics.detail, metrics

        _wait(proc, lambda: read_node(endpoint, 10.0).get("state") == "serving",
              "w1 serving", notify)
        served = _status(port)
        assert served.returncode == 0 and _row(served)[:2] == ["w1", "yes"], served.stdout

        _fill(notify)  # its next notification (watchdog, or STOPPING=1 after the drain) blocks
        proc.send_signal(signal.SIGTERM)
        _wait(proc, lambda: read_node(endpoint, 10.0).get("state") == "draining", "w1 draining")
        draining = _status(port)
        assert draining.returncode == 1, draining.stdout + draining.stderr
        assert _row(draining)[:2] == ["w1", "draining"], draining.stdout
        assert "w1: draining: stopping; finishes the tasks it holds" in draining.stdout
        assert json.loads(_status(port, "--json").stdout)["w1"]["state"] == "draining"
        _wait(proc, lambda: proc.poll() is not None, "w1's exit", notify)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notify.close()
    with open(log_path, errors="replace") as f:
        text = f.read()
    assert proc.returncode == 0 and "Traceback" not in text, text
