"""SIGHUP never ends an agent and never writes from its handler: one that comes while the agent
starts is acted on once it serves, and one that comes while the agent's stderr is stalled (a
foreground ``run`` piped into a pager, a paused terminal) logs its line when the stream moves
again, with no logging error. Real agent processes, real pipes."""

from __future__ import annotations

import fcntl
import glob
import os
import platform
import signal
import subprocess
import sys
import time

import pytest

from agent.config.node import dump_config

from .agent_cluster import REPO, Cluster, build_two_stage_bundle
from .test_startup_stop import WAIT_S, HeldNotifySocket
from .test_systemd_agent import unit_command

F_SETPIPE_SZ = 1031  # <linux/fcntl.h>: the pipe's capacity, one page here
WRITE_SYSCALL = {"x86_64": "1", "aarch64": "64"}.get(platform.machine())  # write(2)
IGNORED = "SIGHUP ignored: the agent has no reload"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _worker_config(bundle, tmp_path) -> str:
    cluster = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2})
    cfg = cluster.config("w1", backend="onnxruntime")
    os.makedirs(cfg.state_dir)
    path = str(tmp_path / "w1.toml")
    with open(path, "w") as f:
        f.write(dump_config(cfg))
    return path


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_sighup_during_start_up_does_not_end_the_agent_and_is_acted_on_once_it_serves(
        bundle, tmp_path):
    """Rule: SIGHUP while the agent starts (held before its engine load) neither ends it (its
    default action did, a death systemd takes for a clean stop) nor stops its start-up: it
    serves (READY=1), then says what the SIGHUP does for it, and stops on SIGTERM with 0."""
    cfg_path = _worker_config(bundle, tmp_path)
    notify = HeldNotifySocket(str(tmp_path / "notify.sock"))
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, PYTHONUNBUFFERED="1", PYTHONPATH=REPO,
               OMP_NUM_THREADS="1")
    log_path = str(tmp_path / "w1.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(unit_command(cfg_path), stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd="/")
    got = []
    try:
        notify.held(proc)
        proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + WAIT_S
        while "READY=1" not in "\n".join(got) and proc.poll() is None and time.monotonic() < end:
            got += notify.drain()
            time.sleep(0.05)
        assert proc.poll() is None, "the agent ended with %s" % proc.returncode
        assert "READY=1" in "\n".join(got), got

        def said() -> str:
            with open(log_path, errors="replace") as f:
                return f.read()
        while IGNORED not in said() and time.monotonic() < end:
            time.sleep(0.05)
        assert IGNORED in said()
    finally:
        status = _stop(proc)
        notify.close()
    assert status == 0


def _blocked_in_write(pid: int) -> bool:
    """True when a thread of process ``pid`` sits in write(2)."""
    for path in glob.glob("/proc/%d/task/*/syscall" % pid):
        try:
            with open(path) as f:
                if f.read().split()[0] == WRITE_SYSCALL:
                    return True
        except (OSError, IndexError):
            pass
    return False


@pytest.mark.skipif(WRITE_SYSCALL is None or not sys.platform.startswith("linux"),
                    reason="reads write(2)'s number in /proc/PID/task/*/syscall (Linux x86_64, "
                           "aarch64)")
def test_a_sighup_while_stderr_is_stalled_logs_its_line_later_with_no_logging_error(
        bundle, tmp_path):
    """Rule: the SIGHUP handler writes nothing itself: SIGHUPs that come while the agent's
    stderr (a buffered pipe, as under a foreground run) is full and a write to it blocks cause
    no "reentrant call" logging error and do not end the agent; once the pipe is read again
    their line is there, and SIGTERM stops the agent with 0."""
    cfg_path = _worker_config(bundle, tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update(PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)  # a few lines fill it
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", cfg_path],
                            stdout=w, stderr=w, env=env, cwd="/")
    os.close(w)
    out = b""
    try:
        end = time.monotonic() + WAIT_S
        while b"serving" not in out:
            assert time.monotonic() < end and proc.poll() is None, out.decode(errors="replace")
            out += os.read(r, 1 << 16)
        # SIGHUPs, each one line, until the pipe is full and a thread blocks writing to it
        end = time.monotonic() + WAIT_S  # a deadline of its own, past a slow start-up
        while not _blocked_in_write(proc.pid):
            assert time.monotonic() < end and proc.poll() is None, proc.returncode
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.05)
        for _ in range(3):  # while the write blocks
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.2)
        os.set_blocking(r, False)
        # what the pipe held: whole lines written before the stall (a line is one write of
        # at most PIPE_BUF bytes, which a pipe takes whole or not at all); the next line is
        # the write that blocked, and the SIGHUPs' line during the stall comes after it
        out += os.read(r, 1 << 16)
        released_at = len(out)
        while _after_blocked_line(out[released_at:]) < 1 and time.monotonic() < end:
            try:
                out += os.read(r, 1 << 16)
            except BlockingIOError:
                time.sleep(0.05)
        assert proc.poll() is None, "the agent ended with %s" % proc.returncode
        proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + WAIT_S  # and one for the drain
        while True:  # to the end of its output
            try:
                chunk = os.read(r, 1 << 16)
            except BlockingIOError:
                assert time.monotonic() < end, "the agent did not stop"
                time.sleep(0.05)
                continue
            if not chunk:
                break
            out += chunk
    finally:
        status = _stop(proc)
        os.close(r)
    text = out.decode(errors="replace")
    assert "Logging error" not in text and "reentrant call" not in text, text[-3000:]
    assert _after_blocked_line(out[released_at:]) >= 1, text[-3000:]
    assert status == 0


def _after_blocked_line(released: bytes) -> int:
    """The IGNORED lines among what came once the stalled pipe was read, after its first line
    (the write that had blocked, whichever line it was): the SIGHUPs sent during the stall."""
    return released.partition(b"\n")[2].count(IGNORED.encode())
