"""`edge-agent status` stays a table of the whole fleet whatever one metrics port answers:
an endpoint that trickles its answer, sends without end or sends values no row can show is
that node's "NO" (or its finite figures), never a hang or a traceback for every node; and
nodes that do not answer are waited for together, not one timeout after the other. Real
sockets on loopback, and a real agent's metrics endpoint beside them."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from agent.fleet import status as st
from agent.fleet.status import fleet_status, format_status
from agent.ops.metrics import AgentMetrics

BODY = b'edge_agent_node_info{node="odd",role="worker",stage="1",policy="dtoee"} 1\n'


class RawServer:
    """A TCP server on loopback that hands every connection to ``handler(conn)``."""

    def __init__(self, handler):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = "http://127.0.0.1:%d/metrics" % self.sock.getsockname()[1]
        self.handler = handler
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.recv(65536)
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture
def servers():
    made = []

    def make(handler):
        made.append(RawServer(handler))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def agent_endpoint():
    m = AgentMetrics("w1")
    m.node_info("worker", 1, "dtoee")
    url = "http://127.0.0.1:%d/metrics" % m.serve("127.0.0.1", 0)
    yield url
    m.close()


def test_a_trickled_answer_is_no_answer_and_the_rest_of_the_fleet_is_shown(servers,
                                                                          agent_endpoint):
    """Rule: --timeout bounds a node's whole answer, not each read of it: an endpoint that
    sends its (valid) metrics a byte at a time is a node not answering, and the others are
    read as usual."""
    def trickle(conn):
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for i in range(len(BODY)):
            conn.sendall(BODY[i:i + 1])
            time.sleep(0.05)

    odd = servers(trickle)
    status = fleet_status({"w1": {"metrics": agent_endpoint}, "odd": {"metrics": odd.url}}, 0.5)
    assert status["w1"]["alive"]
    assert not status["odd"]["alive"]
    assert "no complete answer within 0.5 s" in status["odd"]["error"]
    assert "odd: no complete answer within 0.5 s (%s)" % odd.url in format_status(status)


def test_headers_trickled_past_every_deadline_still_leave_the_table(servers, agent_endpoint):
    """Rule: the whole read of the fleet is bounded (twice --timeout and a second), headers
    included: an endpoint sending its status line a byte per read timeout is a node not
    answering, and the others are shown."""
    stop = threading.Event()

    def slow_headers(conn):
        for ch in b"HTTP/1.0 200 OK\r\nX-Slow: " + b"x" * 10000:
            if stop.wait(0.3):
                return
            conn.sendall(bytes([ch]))

    odd = servers(slow_headers)
    try:
        status = fleet_status({"w1": {"metrics": agent_endpoint}, "odd": {"metrics": odd.url}},
                              0.5)
    finally:
        stop.set()
    assert status["w1"]["alive"]
    assert not status["odd"]["alive"]
    assert status["odd"]["error"] == "no complete answer within 2 s"
    assert status["odd"]["url"] == odd.url


def test_an_endless_answer_is_no_answer(servers, monkeypatch):
    """Rule: an endpoint sending more than an agent's metrics ever are is not read to its end
    (memory): it is a node not answering, said so."""
    monkeypatch.setattr(st, "ANSWER_MAX_BYTES", 1 << 20)

    def endless(conn):
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        while True:
            conn.sendall(b"#" * 65535 + b"\n")

    odd = servers(endless)
    status = fleet_status({"odd": {"metrics": odd.url}}, 30.0)
    assert not status["odd"]["alive"]
    assert "answered over 1 MiB: not an agent's metrics" in status["odd"]["error"]


def test_nan_and_infinite_samples_are_left_out_not_a_traceback(servers):
    """Rule: Prometheus text may carry NaN and +Inf; status shows the node with its finite
    figures (no count, mode or time is made of the others)."""
    body = (BODY + b'edge_agent_dropped_frames_total{node="odd",reason="late"} +Inf\n'
            b'edge_agent_dropped_frames_total{node="odd",reason="full"} 3\n'
            b'edge_agent_queue_length{node="odd",queue="in"} NaN\n'
            b'edge_agent_tasks_in_total{node="odd",stage="1"} -Inf\n'
            b'edge_agent_last_warning_timestamp_seconds{node="odd",level="WARNING",'
            b'message="x"} NaN\n')

    def answer(conn):
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    odd = servers(answer)
    status = fleet_status({"odd": {"metrics": odd.url}}, 5.0)
    assert status["odd"]["alive"]
    assert status["odd"]["drops"] == {"full": 3}
    assert status["odd"]["queues"] == {} and status["odd"]["last_warning"] == {}
    assert "full=3" in format_status(status)


def test_nodes_that_do_not_answer_are_waited_for_together(servers):
    """Rule: status reads every node at once: an endpoint that answers only once all ten
    nodes' reads are open is answered for all ten (read one after the other, each would wait
    for the next and time out)."""
    nodes = 10
    arrived = threading.Barrier(nodes)

    def answer_when_all_wait(conn):
        try:
            arrived.wait(timeout=60)
        except threading.BrokenBarrierError:
            return
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)

    srv = servers(answer_when_all_wait)
    status = fleet_status({"n%d" % i: {"metrics": srv.url, "named_by_answer": True}
                           for i in range(nodes)}, 30.0)
    assert [n for n, s in status.items() if s["alive"]] == ["n%d" % i for i in range(nodes)]
