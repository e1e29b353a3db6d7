"""sd_notify adapter: messages reach a real AF_UNIX datagram socket; no-op outside systemd."""

import os
import socket
import uuid

import pytest

from agent.ops.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(10)
    yield sock, path
    sock.close()


def _recv(sock):
    return sock.recv(4096).decode().split("\n")


def test_each_message_kind_arrives_as_key_value_lines(listener):
    sock, path = listener
    n = Notifier(path)
    assert n.enabled
    assert n.ready("engines loaded")
    lines = _recv(sock)
    assert "READY=1" in lines and "STATUS=engines loaded" in lines
    assert "MAINPID=%d" % os.getpid() in lines
    n.watchdog()
    assert _recv(sock) == ["WATCHDOG=1"]
    n.extend_timeout(90)
    assert _recv(sock) == ["EXTEND_TIMEOUT_USEC=90000000"]
    n.status("building TensorRT plan\nstage 2")
    assert _recv(sock) == ["STATUS=building TensorRT plan stage 2"]
    n.stopping()
    assert _recv(sock) == ["STOPPING=1"]
    n.close()


def test_abstract_socket_name_with_at_sign():
    """'@name' in NOTIFY_SOCKET is a Linux abstract socket (leading NUL byte)."""
    name = "edge-agent-test-%s" % uuid.uuid4().hex
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(10)
    try:
        n = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert n.watchdog()
        assert _recv(sock) == ["WATCHDOG=1"]
    finally:
        sock.close()


def test_no_socket_means_every_call_is_a_no_op():
    n = Notifier.from_environ({})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False
    assert Notifier(None).extend_timeout(5) is False


def test_unreachable_socket_is_logged_not_raised(tmp_path, caplog):
    """A failed notification never stops the agent."""
    n = Notifier(str(tmp_path / "missing.sock"))
    assert n.ready() is False
    assert "sd_notify" in caplog.text


def test_relative_path_is_ignored():
    assert not Notifier("relative.sock").enabled


def test_watchdog_is_fed_only_while_the_health_check_passes(listener, caplog):
    """The node loop's health check gates WATCHDOG=1: a dead inference thread stops the pings,
    so systemd restarts the agent after WatchdogSec."""
    from agent.node.hooks import NodeHooks

    sock, path = listener
    now = [0.0]
    hooks = NodeHooks(notifier=Notifier(path), watchdog_interval_s=1.0, clock=lambda: now[0])
    hooks.health(True)
    assert _recv(sock) == ["WATCHDOG=1"]
    now[0] = 5.0
    hooks.health(False)
    hooks.health(False)
    sock.settimeout(0.2)
    with pytest.raises(socket.timeout):
        sock.recv(4096)
    assert caplog.text.count("health check failed") == 1
