"""SIGTERM while an agent starts (``systemctl stop`` during its engine load): one line of its own
saying so, exit status 0 as after the loop's stop (systemd's normal stop), nothing half-written.

The agent is held at a known start-up point with real parts only: its sd_notify socket (what
systemd listens on) has a full queue, so the agent's second notification, just before its stage
engine is loaded, blocks until the test reads. The agent runs as the unit runs it."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time

import pytest

from agent.config.node import dump_config

from .agent_cluster import REPO, Cluster, build_two_stage_bundle
from .test_systemd_agent import unit_command

WAIT_S = 120.0  # generous: a loaded 2-core machine starts onnxruntime slowly


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


class HeldNotifySocket:
    """systemd's notify socket with all but one slot of its queue taken: the agent's first
    notification fills it and its second blocks (``held``) until ``drain``."""

    def __init__(self, path: str):
        self.path = path
        self.rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.rx.bind(path)
        self.tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.tx.connect(path)
        self.tx.setblocking(False)
        while True:
            try:
                self.tx.send(b"FILLER=1")
            except BlockingIOError:
                break
        self.rx.recv(64)  # one slot free

    def held(self, proc: subprocess.Popen) -> None:
        """Wait until the queue is full again: the agent sent one notification, and the next
        one cannot go (a connected sender polls not writable while its peer's queue is full)."""
        poller = select.poll()
        poller.register(self.tx, select.POLLOUT)
        end = time.monotonic() + WAIT_S
        while poller.poll(100):
            assert proc.poll() is None, "agent exited with %s before its notification" % (
                proc.returncode,)
            assert time.monotonic() < end, "the agent sent no notification"

    def drain(self) -> list:
        """Every notification queued now, the filler left out."""
        self.rx.setblocking(False)
        got = []
        try:
            while True:
                got.append(self.rx.recv(4096).decode())
        except BlockingIOError:
            pass
        return [g for g in got if g != "FILLER=1"]

    def close(self) -> None:
        self.tx.close()
        self.rx.close()


def test_sigterm_during_the_engine_load_logs_a_line_and_exits_0_with_nothing_half_written(
        bundle, tmp_path):
    """Rule: SIGTERM before the agent serves ends it with exit status 0 (the status its loop's
    SIGTERM stop gives, which systemd takes for a normal stop; a death by SIGTERM was 143),
    STOPPING=1 and never READY=1 sent, one WARNING line naming the signal, the start-up steps
    done and that no task was taken; the state directory holds no state, stats or records and
    no temporary file, and the next start takes the state directory (its lock was let go)."""
    cluster = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2})
    cfg = cluster.config("w1", backend="onnxruntime")
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
    got = []
    try:
        notify.held(proc)  # held before its engine load: files, lock and bundle are done
        proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + WAIT_S
        while proc.poll() is None and time.monotonic() < end:
            got += notify.drain()  # let it go on: a held signal is acted on at the next step
            time.sleep(0.05)
        status = proc.wait(WAIT_S)
        got += notify.drain()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notify.close()
    with open(log_path, errors="replace") as f:
        text = f.read()
    assert status == 0, text
    assert "READY=1" not in "\n".join(got) and "STOPPING=1" in got, got
    lines = [ln for ln in text.splitlines() if "during start-up" in ln]
    assert len(lines) == 1 and "WARNING" in lines[0], text
    assert "stopped by SIGTERM during start-up" in lines[0]
    assert "state_dir locked" in lines[0] and "no task was taken" in lines[0]
    assert "Traceback" not in text
    assert sorted(os.listdir(cfg.state_dir)) == [".lock"]  # the lock's file, nothing else

    # the next start serves: the lock went with the stop
    cluster.start("w1", backend="onnxruntime")
    try:
        cluster.wait_for(lambda: "serving" in cluster.tail("w1", 50), WAIT_S, "w1 serving")
    finally:
        cluster.stop_all()
    assert cluster.procs["w1"].returncode == 0
