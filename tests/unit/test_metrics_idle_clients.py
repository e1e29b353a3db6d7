"""The metrics endpoint cannot be held by idle clients: a connection that sends nothing or half
a request is closed by the server after ``REQUEST_TIMEOUT_S`` (its thread ends), and no more
than ``MAX_REQUESTS`` are served at once. Real sockets and HTTP against ``AgentMetrics.serve``;
the module constants are lowered so the test stays short."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import pytest

from agent.ops import metrics_server
from agent.ops.metrics import AgentMetrics

DEADLINE_S = 30.0  # generous: the machine may be loaded


def _scrape(port):
    """(status, body) of a GET /metrics."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                timeout=DEADLINE_S) as resp:
        return resp.status, resp.read().decode()


def _idle(port, data):
    """A connection to the endpoint that sends ``data`` (b"": nothing) and then waits."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
    if data:
        conn.sendall(data)
    return conn


def _closed_by_server(conn):
    """What the server sent before it closed ``conn`` (raises socket.timeout when it keeps it
    open past DEADLINE_S)."""
    got = b""
    while True:
        try:
            chunk = conn.recv(4096)
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


def _wait_for(pred, what):
    end = time.monotonic() + DEADLINE_S
    while not pred():
        assert time.monotonic() < end, what
        time.sleep(0.05)


@pytest.fixture
def served(monkeypatch):
    """A serving ``AgentMetrics`` (its port) with a 1 s request timeout, closed afterwards."""
    monkeypatch.setattr(metrics_server, "REQUEST_TIMEOUT_S", 1.0)
    m = AgentMetrics("w1")
    m.task_in(1)
    yield m
    m.close()


def test_idle_and_half_sent_requests_are_closed_after_the_timeout_and_scrapes_still_answer(
        served):
    """Rule: a connection idle for REQUEST_TIMEOUT_S (nothing sent, a request line only, a
    header left unfinished) is closed by the server without an answer, its thread ends, and a
    normal scrape meanwhile answers in full."""
    before = set(threading.enumerate())
    port = served.serve("127.0.0.1", 0)
    idle = [_idle(port, b""), _idle(port, b"GET /metrics HTTP/1.1\r\n"),
            _idle(port, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAcc")]
    try:
        status, body = _scrape(port)
        assert status == 200 and 'edge_agent_tasks_in_total{node="w1",stage="1"} 1.0' in body
        for conn in idle:
            assert _closed_by_server(conn) == b""  # closed, never answered
    finally:
        for conn in idle:
            conn.close()
    server_thread = served._thread
    _wait_for(lambda: not [t for t in threading.enumerate()
                           if t not in before and t is not server_thread],
              "request threads still running %.0f s after their connections were dropped"
              % DEADLINE_S)
    assert _scrape(port)[0] == 200


def test_connections_beyond_max_requests_are_closed_unanswered_until_a_slot_frees(
        served, monkeypatch):
    """Rule: with MAX_REQUESTS requests in progress, a further connection is closed at once
    without an answer (no thread for it); once one of them ends, scrapes answer again."""
    monkeypatch.setattr(metrics_server, "REQUEST_TIMEOUT_S", DEADLINE_S)  # held by the test
    monkeypatch.setattr(metrics_server, "MAX_REQUESTS", 2)
    before = set(threading.enumerate())
    port = served.serve("127.0.0.1", 0)
    server_thread = served._thread

    def requests_running():
        return len([t for t in threading.enumerate()
                    if t not in before and t is not server_thread])

    held = [_idle(port, b"GET /metrics HTTP/1.1\r\n") for _ in range(2)]
    try:
        _wait_for(lambda: requests_running() == 2, "the server took no two requests")
        extra = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
        try:
            try:
                extra.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed before the request was sent: no answer either
            assert _closed_by_server(extra) == b""
        finally:
            extra.close()
        assert requests_running() == 2
        held.pop().close()  # the server reads the end of it: that request ends, its slot frees
        _wait_for(lambda: requests_running() < 2, "a closed connection kept its request")
        status, body = _scrape(port)
        assert status == 200 and "edge_agent_tasks_in_total" in body
    finally:
        for conn in held:
            conn.close()
