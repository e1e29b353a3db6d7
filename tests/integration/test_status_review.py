"""`edge-agent status --endpoints` pointed at a port where no agent serves: another HTTP service
(one answering 200 with other metrics, one answering 404) or a service that does not speak HTTP
(an SSH banner). Each is that node's "NO" with one line naming it as not an agent's metrics
endpoint, exit status 1, no traceback. Real `python -m agent status` processes, real sockets on
loopback, and a real agent's metrics endpoint beside them."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading

import pytest

from agent.ops.metrics import AgentMetrics

WAIT_S = 120  # a generous bound for a loaded machine; the command itself ends within --timeout


class _OtherExporter(http.server.BaseHTTPRequestHandler):
    """A Prometheus exporter of another program (node_exporter on a mistyped port)."""

    def do_GET(self):  # noqa: N802 (the handler's required name)
        body = b"# HELP node_cpu_seconds_total Seconds.\nnode_cpu_seconds_total 12\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _NotFound(_OtherExporter):
    def do_GET(self):  # noqa: N802
        self.send_error(404, "File not found")


@pytest.fixture
def http_server():
    made = []

    def make(handler):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        made.append(srv)
        return "127.0.0.1:%d" % srv.server_address[1]
    yield make
    for srv in made:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def banner_server():
    """A TCP service that greets every connection with an SSH banner and closes it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)

    def loop():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_8.9\r\n")
    threading.Thread(target=loop, daemon=True).start()
    yield "127.0.0.1:%d" % sock.getsockname()[1]
    sock.close()


@pytest.fixture
def agent_endpoint():
    m = AgentMetrics("w1")
    m.node_info("worker", 1, "dtoee")
    port = m.serve("127.0.0.1", 0)
    yield "127.0.0.1:%d" % port
    m.close()


def _status(*endpoints):
    return subprocess.run([sys.executable, "-m", "agent", "status", "--timeout", "5",
                           "--endpoints"] + list(endpoints),
                          capture_output=True, text=True, timeout=WAIT_S)


def _note(out: str, endpoint: str) -> list:
    return [line for line in out.splitlines() if line.startswith(endpoint + ":")]


@pytest.mark.parametrize("kind, said", [
    ("exporter", "answered, but with no edge_agent_ series"),
    ("not_found", "answered HTTP 404"),
])
def test_an_http_service_that_is_no_agent_is_a_no_with_one_line(
        http_server, agent_endpoint, kind, said):
    """Rule: an endpoint answering HTTP without any edge_agent_ series (another exporter) or
    with an HTTP error is not an answering agent: its row is NO, one line says it is not an
    agent's metrics endpoint, exit 1; the agent beside it still answers."""
    other = http_server(_OtherExporter if kind == "exporter" else _NotFound)
    proc = _status(other, agent_endpoint)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    notes = _note(proc.stdout, other)
    assert len(notes) == 1 and said in notes[0], proc.stdout
    assert "not an agent's metrics endpoint" in notes[0]
    assert "1/2 nodes answering" in proc.stdout
    assert any(line.startswith("w1 ") and " yes " in line for line in proc.stdout.splitlines())


def test_a_service_that_does_not_speak_http_is_named_in_one_line(banner_server):
    """Rule: a port whose service answers something that is not HTTP (an SSH banner) is one
    line naming what came back, with no line break of the answer in the output, exit 1."""
    proc = _status(banner_server)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    notes = _note(proc.stdout, banner_server)
    assert len(notes) == 1, proc.stdout
    assert "SSH-2.0-OpenSSH_8.9" in notes[0] and "not HTTP" in notes[0]
    assert notes[0].endswith("(http://%s/metrics)" % banner_server), notes[0]
