"""sd_notify when the receiving socket is gone, and the testbed's notify folders.

A testbed killed outright (SIGKILL) leaves its notify socket with nothing bound to it, and its
agents stop (``run --parent-pid``): their last notifications are refused, which is the end
expected then, not a fault (DEBUG). While serving, a refused notification is a WARNING. The
folder such a testbed leaves behind is removed by the next testbed's start, never a folder a
live testbed uses. Real AF_UNIX datagram sockets and real processes throughout.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from agent.ops.sdnotify import Notifier
from agent.testbed.procs import NotifyListener

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _dead_socket(path: str) -> str:
    """A socket file nothing is bound to any more (what a SIGKILLed receiver leaves)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.close()
    return path


def _levels(caplog, text: str):
    return [r.levelno for r in caplog.records if text in r.getMessage()]


def test_a_refused_notification_warns_while_serving_and_is_debug_once_stopping(tmp_path,
                                                                               caplog):
    """Rule: a notification to a socket nothing is bound to (connection refused) or that is
    gone (no such file) is a WARNING while the agent serves, and DEBUG once it is stopping."""
    dead = _dead_socket(str(tmp_path / "notify.sock"))
    n = Notifier(dead)
    with caplog.at_level(logging.DEBUG, logger="agent.ops.sdnotify"):
        assert not n.watchdog()
        assert _levels(caplog, "sd_notify to %s failed" % dead) == [logging.WARNING]
        caplog.clear()
        assert not n.stopping()
        assert not n.watchdog()
        assert _levels(caplog, "sd_notify to %s failed" % dead) == [logging.DEBUG] * 2
        caplog.clear()
        os.unlink(dead)
        assert not n.status("stopped")
        assert _levels(caplog, "No such file") == [logging.DEBUG]
    n.close()


CHILD = """
import logging, os, sys, time
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(levelname)s %(message)s")
from agent.ops.sdnotify import Notifier
n = Notifier(sys.argv[1])
parent = os.getppid()
print("started", flush=True)
end = time.monotonic() + 60
while os.getppid() == parent and time.monotonic() < end:
    time.sleep(0.02)
n.watchdog()
print("done", flush=True)
"""

PARENT = """
import subprocess, sys, time
with open(sys.argv[2], "w") as out:
    subprocess.Popen([sys.executable, "-c", sys.argv[3], sys.argv[1]], stdout=out)
end = time.monotonic() + 60
while "started" not in open(sys.argv[2]).read() and time.monotonic() < end:
    time.sleep(0.02)
"""


def test_a_refused_notification_after_the_starting_process_exited_is_debug(tmp_path):
    """Rule: once the process that started the agent has exited (a SIGKILLed testbed, whose
    socket went with it; the agent is being stopped by the parent-death signal), a refused
    notification is DEBUG, not a WARNING: a draining agent's watchdog pings say nothing."""
    dead = _dead_socket(str(tmp_path / "notify.sock"))
    out = str(tmp_path / "child.out")
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-c", PARENT, dead, out, CHILD], env=env, cwd=REPO,
                   timeout=120, check=True)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        with open(out) as f:
            text = f.read()
        if "done" in text:
            break
        time.sleep(0.05)
    lines = [line for line in text.splitlines() if "sd_notify" in line]
    assert "done" in text and len(lines) == 1, text
    assert lines[0].startswith("DEBUG sd_notify to %s failed: [Errno 111]" % dead), text


def test_a_testbed_start_removes_only_the_notify_folders_nothing_serves():
    """Rule: a new NotifyListener (a testbed's start) removes the edge-notify-* folders whose
    socket nothing is bound to and that hold nothing else; a live listener's folder, a folder
    whose socket is not made yet, one holding another file, and a plain file are left."""
    base = tempfile.mkdtemp(prefix="nt-")  # short: a socket path holds at most 107 bytes
    try:
        _sweep_in(base)
    finally:
        shutil.rmtree(base)


def _sweep_in(base: str) -> None:
    stale = os.path.join(base, "edge-notify-stale")
    os.mkdir(stale)
    _dead_socket(os.path.join(stale, "notify.sock"))
    unmade = os.path.join(base, "edge-notify-unmade")
    os.mkdir(unmade)
    other = os.path.join(base, "edge-notify-other")
    os.mkdir(other)
    _dead_socket(os.path.join(other, "notify.sock"))
    with open(os.path.join(other, "keep.txt"), "w") as f:
        f.write("someone's")
    with open(os.path.join(base, "edge-notify-file"), "w") as f:
        f.write("")
    live = NotifyListener(base)
    try:
        second = NotifyListener(base)  # the next testbed: the first one still serves
        try:
            left = sorted(os.listdir(base))
            assert "edge-notify-stale" not in left
            for name in ("edge-notify-unmade", "edge-notify-other", "edge-notify-file",
                         os.path.basename(os.path.dirname(live.path)),
                         os.path.basename(os.path.dirname(second.path))):
                assert name in left, left
            assert os.path.exists(live.path)
            Notifier(live.path).ready("still served")
            end = time.monotonic() + 30
            while not live.ready_pids and time.monotonic() < end:
                time.sleep(0.02)
            assert live.ready_pids == {os.getpid()}
        finally:
            second.close()
    finally:
        live.close()
