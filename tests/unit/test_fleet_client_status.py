"""The client's answers (lenient about the source's RESULT fields), the status table read from
real metrics text, and the async client against a real ZeroMQ ROUTER standing in for a source."""

from __future__ import annotations

import asyncio

import msgpack
import numpy as np
import pytest
import zmq

from agent.fleet.client import AsyncClient, Client
from agent.fleet.client_wire import parse_answer
from agent.fleet.status import format_status, parse_metrics, summarise
from agent.ops.metrics import AgentMetrics
from agent.protocol import wire


def _result(tid, **extra):
    fields = {"id": tid, "attempt": 0, "source": "cam", "exit_stage": 2, "cls": 7,
              "confidence": 0.9, "worker": "w2", "hops": 2, "resends": 0, "created": 1.0}
    fields.update(extra)
    return [msgpack.packb(dict({"v": wire.VERSION, "k": int(wire.Kind.RESULT), "from": "cam",
                                "slot": 0, "round": 0, "t": []}, **fields))]


def test_a_result_without_outcome_is_completed_and_a_rejection_carries_its_reason():
    """Sources that predate ``outcome`` answer "completed"; a rejected or lost answer has its
    reason and no class; an answer to an id never sent is ignored."""
    sent = {"a": 10.0, "b": 10.0}
    a = parse_answer(_result("a"), sent, 10.5)
    assert (a.outcome, a.reason, a.cls, a.exit_stage, a.ok) == ("completed", "", 7, 2, True)
    assert abs(a.delay_s - 0.5) < 1e-9
    b = parse_answer(_result("b", outcome="rejected", reason="overload", cls=-1), sent, 11.0)
    assert (b.outcome, b.reason, b.cls, b.confidence, b.ok) == ("rejected", "overload", -1, 0.0,
                                                                 False)
    assert parse_answer(_result("zzz"), sent, 12.0) is None
    assert parse_answer([b"junk"], {"x": 1.0}, 2.0) is None


def test_an_error_answer_carries_the_sources_detail_as_one_printable_line():
    """A refused input's ``detail`` reaches the caller; control characters (escape codes from
    the network) become "?" and an overlong text is cut, in ``reason`` too."""
    from agent.fleet.client import DETAIL_MAX_CHARS

    sent = {"a": 1.0, "b": 1.0, "c": 1.0}
    why = "input float64 (1, 28, 28); stage 1 takes float32 (1, 1, 28, 28)"
    a = parse_answer(_result("a", outcome="error", reason="bad_input", cls=-1, detail=why),
                     sent, 2.0)
    assert (a.outcome, a.reason, a.detail) == ("error", "bad_input", why)
    b = parse_answer(_result("b", outcome="error", reason="bad\x1b[2J", cls=-1,
                             detail="x\n\x1b]0;t\x07" + "y" * 1000), sent, 2.0)
    assert b.reason == "bad?[2J"
    assert b.detail.startswith("x??]0;t?yyy") and len(b.detail) == DETAIL_MAX_CHARS
    assert parse_answer(_result("c"), sent, 2.0).detail == ""
    assert wire.decode(_result("c", detail=why)).fields["detail"] == why  # a RESULT field
    assert "detail" not in wire.answer_fields("c", "s1", "lost", "deadline", 1.0)
    assert wire.answer_fields("c", "s1", "error", "bad_input", 1.0, why)["detail"] == why


def _fake_source(ctx, endpoint):
    """A ROUTER answering every TASK with a RESULT for the client's id (as a source does)."""
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    return sock


def _answer_one(sock, **extra):
    ident, *frames = sock.recv_multipart()
    msg = wire.decode(frames)
    assert msg.tensors[0].shape == (1, 1, 4, 4)
    sock.send_multipart([ident] + _result(msg.fields["id"], **extra))


def test_blocking_client_gets_its_answer_and_reports_a_loss_after_its_timeout():
    """infer() returns the source's answer; with no answer it returns "lost" with the reason."""
    ctx = zmq.Context()
    src = _fake_source(ctx, "inproc://src")
    x = np.zeros((1, 1, 4, 4), np.float32)
    with Client("inproc://src", ctx=ctx, timeout_s=5.0) as c:
        tid = c.send(x)
        _answer_one(src)
        ans = c.receive(5.0)
        assert ans.id == tid and ans.ok
        lost = c.infer(x, timeout_s=0.2)
        assert lost.outcome == "lost" and lost.reason == "no answer within 0.2 s"
    src.close(0)
    ctx.term()


def test_async_client_keeps_many_requests_in_flight():
    """Three awaited infer() calls at once each get their own answer; ``async with`` closes
    the client as ``with`` closes ``Client``."""
    import zmq.asyncio

    async def main():
        ctx = zmq.asyncio.Context()
        src = ctx.socket(zmq.ROUTER)
        src.bind("inproc://asrc")

        async def serve(n):
            for _ in range(n):
                ident, *frames = await src.recv_multipart()
                msg = wire.decode(frames)
                await src.send_multipart([ident] + _result(msg.fields["id"], outcome="rejected",
                                                           reason="deadline"))

        x = np.zeros((1, 1, 4, 4), np.float32)
        server = asyncio.ensure_future(serve(3))
        async with AsyncClient("inproc://asrc", ctx=ctx, timeout_s=5.0) as client:
            answers = await asyncio.gather(*(client.infer(x) for _ in range(3)))
        await server
        assert client.sock.closed
        src.close(0)
        ctx.term()
        return answers

    answers = asyncio.run(main())
    assert len({a.id for a in answers}) == 3
    assert all(a.outcome == "rejected" and a.reason == "deadline" for a in answers)


def test_status_reads_an_agents_real_metrics_text():
    """Routing, thresholds, queues, drops (with refused clients), power mode and neighbours
    come out of the exporter's own text; a node that does not answer is a row with why."""
    from prometheus_client import generate_latest

    m = AgentMetrics("w1")
    m.routing("w2a", 0.25)
    m.routing("w2b", 0.75)
    m.threshold(1, 0.8)
    m.queue_length("inference", 3)
    m.capacity(2.5e9)
    m.dropped("bad_header")
    m.client_refused()
    m.neighbour_alive("w2a", True)
    m.neighbour_alive("w2b", False)
    m.power_mode("MAXN")
    s = summarise(parse_metrics(generate_latest(m.registry).decode()))
    assert s["routing"] == {"w2a": 0.25, "w2b": 0.75} and s["thresholds"] == {"1": 0.8}
    assert s["drops"] == {"bad_header": 1, "client_refused": 1}
    assert s["power_mode"] == "MAXN" and s["capacity_flops"] == 2.5e9
    assert s["neighbours"] == {"w2a": True, "w2b": False}
    s.update(alive=True, role="worker", stage=1)
    table = format_status({"w1": s, "w9": {"alive": False, "error": "refused",
                                           "url": "http://h:1/metrics", "role": "worker",
                                           "stage": 2}})
    row = [l for l in table.splitlines() if l.startswith("w1 ")][0]
    assert "w2a 0.25 w2b 0.75" in row and "1/2" in row and "MAXN" in row
    assert "1/2 nodes answering" in table and "w9: refused (http://h:1/metrics)" in table


def test_the_client_module_imports_no_agent_internals_beyond_the_wire():
    """A camera program importing the client loads the wire contract, not the node, the
    policies or the engines (a fresh interpreter, so other tests' imports do not count)."""
    import subprocess
    import sys

    code = ("import sys, agent.fleet.client\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('agent', 'engines', 'calibration', 'onnxruntime', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == str(["agent", "agent.fleet", "agent.fleet.client",
                               "agent.fleet.client_wire", "agent.protocol",
                               "agent.protocol.ack", "agent.protocol.text",
                               "agent.protocol.wire", "agent.protocol.wire_error"])


def test_status_shows_each_nodes_newest_warning_line():
    """Every WARNING/ERROR an agent logs becomes its `last warning` (the newest replaces the
    older one), readable by `status` even with quotes and newlines in it; closing the metrics
    stops the capture."""
    import logging

    from prometheus_client import generate_latest

    logger = logging.getLogger("test.status.warnings")
    logger.propagate = False
    m = AgentMetrics("w1")
    m.capture_warnings(logger)
    logger.info("not a warning")
    assert summarise(parse_metrics(generate_latest(m.registry).decode()))["last_warning"] == {}
    logger.warning("no live route to stage 2: \"w2a\" gone\nsecond line")
    logger.error("records.jsonl: disk full")
    s = summarise(parse_metrics(generate_latest(m.registry).decode()))
    assert s["last_warning"]["level"] == "ERROR"
    assert s["last_warning"]["message"] == "records.jsonl: disk full"
    m.close()
    logger.warning("after close")
    s = summarise(parse_metrics(generate_latest(m.registry).decode()))
    assert s["last_warning"]["message"] == "records.jsonl: disk full"
    s.update(alive=True, role="worker", stage=1)
    assert "ERROR records.jsonl: disk full" in format_status({"w1": s})
    m2 = AgentMetrics("w2")
    m2.last_warning("WARNING", 'a "quoted"\nmulti-line \\ text', 1.0)
    s2 = summarise(parse_metrics(generate_latest(m2.registry).decode()))
    assert s2["last_warning"]["message"] == "a 'quoted' multi-line / text"


def test_status_without_a_manifest_shows_role_stage_and_every_configured_neighbour():
    """Rule: an agent says what it is (``edge_agent_node_info``) and lists every configured
    neighbour from start-up (0 until heard), so `status --endpoints` (no fleet manifest) shows
    a source's role and stage, and `hears` counts heard / configured, a neighbour that never
    came up included."""
    from types import SimpleNamespace

    from agent.fleet.status import fleet_status
    from agent.node.build import report_node

    m = AgentMetrics("cam")
    cfg = SimpleNamespace(role="source", stage=0, policy="dtoee", metrics_port=0,
                          peers=[SimpleNamespace(id=p) for p in ("w1a", "w1b", "w1c")])
    report_node(cfg, m)
    m.neighbour_alive("w1a", True)  # heard; w1b, w1c never came up
    port = m.serve("127.0.0.1", 0)
    try:
        st = fleet_status({"cam": {"metrics": "http://127.0.0.1:%d/metrics" % port}})["cam"]
    finally:
        m.close()
    assert st["alive"] and st["role"] == "source" and st["stage"] == "0"
    assert st["protocol"] == str(wire.VERSION)  # a rolling upgrade tells versions apart
    assert st["neighbours"] == {"w1a": True, "w1b": False, "w1c": False}
    row = [line for line in format_status({"cam": st}).splitlines() if line.startswith("cam ")]
    assert " source " in row[0] and " 1/3 " in row[0]


@pytest.mark.parametrize("endpoint", ["localhost", "localhost:99999", "localhost:abc",
                                      "ftp://h:1/metrics", ":9464"])
def test_status_endpoints_without_a_host_and_port_are_a_usage_error(endpoint, capsys):
    """Rule: `status --endpoints` takes HOST:PORT or an http URL with a port in 1..65535;
    anything else is one error line, exit 2 (a bare host was read as port 80 and refused)."""
    from agent.cli import main

    assert main(["status", "--endpoints", endpoint]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--endpoints: %r" % endpoint in err[0]


def test_status_shows_a_sources_task_outcomes_and_a_workers_received_and_refused(tmp_path):
    """Rule: a source's created/completed/lost/rejected tasks reach its metrics as they happen
    (its task book's own counts, 0 from start-up) and `status` shows them; a worker's column is received /
    refused. A rejected task shows there, not only in the drops of frames."""
    from prometheus_client import generate_latest

    from agent.node.book import SourceBook
    from agent.node.records import RecordWriter

    m = AgentMetrics("cam")
    m.node_info("source", 0, "dtoee")  # at start-up: every outcome at 0, before any task
    assert summarise(parse_metrics(generate_latest(m.registry).decode()))["source_tasks"] == {
        "created": 0, "completed": 0, "lost": 0, "rejected": 0}
    records = RecordWriter(str(tmp_path / "records.jsonl"))
    book = SourceBook("cam", records)
    book.on_outcome = m.source_task
    x = np.zeros((1, 1, 28, 28), dtype=np.float32)
    a, b, c = (book.new(x, 1, 1.0, 1.0) for _ in range(3))
    book.complete({"id": a.id, "exit_stage": 1, "cls": 1, "confidence": 0.9, "hops": 1,
                   "resends": 0, "worker": "w1"}, 2.0, 2.0)
    book.lose(b.id, 3.0, 3.0, "deadline")
    book.reject(4.0, 4.0, "overload")
    records.close()
    s = summarise(parse_metrics(generate_latest(m.registry).decode()))
    assert s["source_tasks"] == {"created": 4, "completed": 1, "lost": 1, "rejected": 1}
    assert {k: v for k, v in book.counts().items() if k in s["source_tasks"]} == s["source_tasks"]
    s.update(alive=True, role="source", stage=0)
    w = AgentMetrics("w1")
    for _ in range(5):
        w.task_in(1)
    w.refused("overload")
    ws = summarise(parse_metrics(generate_latest(w.registry).decode()))
    ws.update(alive=True, role="worker", stage=1)
    table = format_status({"cam": s, "w1": ws}).splitlines()
    assert table[0].split()[:10] == ["node", "alive", "role", "stage", "mode", "capacity",
                                     "FLOP/s", "queue", "hears", "tasks"]
    assert " 4/1/1/1 " in [r for r in table if r.startswith("cam ")][0]
    assert " 5/1 " in [r for r in table if r.startswith("w1 ")][0]
    assert "tasks = created/completed/lost/rejected (source), received/refused (worker)" in (
        table[-1])
