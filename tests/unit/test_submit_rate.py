"""``edge-agent submit --rate``, ``--out`` and the client's message limit over real sockets,
with a stand-in source: inputs sent on schedule while answers are outstanding, every input in
the tally, records ``report`` reads, an interrupt's inputs in flight in the records, and
inputs above the source's ``max_message_bytes`` refused before anything is sent."""

from __future__ import annotations

import asyncio
import json
import os
import threading

import numpy as np
import pytest

from agent import cli
from agent.fleet.client import AsyncClient, Client, InputTooLarge
from agent.fleet.client_wire import message_limit
from agent.protocol import wire
from tests.unit.test_cli import _silent_router
from tests.unit.test_submit_run import _endpoint


def _answer_after_all(endpoint, n):
    """A stand-in source that answers nothing until it holds ``n`` inputs, then answers them
    all (completed, class 7), last first. Returns (context, thread)."""
    ctx, sock = _silent_router(endpoint)

    def serve():
        held = []
        try:
            while len(held) < n and sock.poll(30000):
                ident, *frames = sock.recv_multipart()
                held.append((ident, wire.decode(frames).fields["id"]))
            for ident, tid in reversed(held):
                fields = {"id": tid, "attempt": 0, "source": "cam", "exit_stage": 2, "cls": 7,
                          "confidence": 0.9, "worker": "w1", "hops": 1, "resends": 0,
                          "created": 1.0}
                sock.send_multipart([ident] + wire.encode(wire.Kind.RESULT, "cam", fields))
            sock.poll(2000)  # linger a little: the answers are on their way
        finally:
            sock.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return ctx, t


def test_rate_keeps_sending_while_answers_are_outstanding_and_each_input_is_tallied(
        tmp_path, capsys):
    """Rule: with --rate the inputs go out on schedule without waiting for answers (a source
    that answers only once it holds all six still completes all six, which one input at a time
    never could), and every input sent ends in the summary."""
    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((3, 1, 28, 28), np.float32), y=np.array([7, 7, 3]))
    endpoint = _endpoint()
    ctx, t = _answer_after_all(endpoint, 6)
    try:
        assert cli.main(["submit", "--images", images, "--endpoint", endpoint, "--count", "6",
                         "--rate", "50", "--timeout", "30", "--out", str(tmp_path / "runs")]) == 0
    finally:
        t.join(60)
        ctx.term()
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == "6 sent: 6 completed", out
    assert out[-1].startswith("completed: accuracy 66.7 % (4 of 6 labelled), delay mean "), out
    with open(str(tmp_path / "runs" / "latest" / "records.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    assert sorted(r["id"] for r in recs) == sorted("submit-%d-%d" % (os.getpid(), k)
                                                   for k in range(1, 7))
    # all six were sent before the first answer came
    assert max(r["created_mono"] for r in recs) <= min(r["finished_mono"] for r in recs)
    assert all(r["status"] == "completed" and r["exit_stage"] == 2 and r["cls"] == 7
               and r["delay_s"] == pytest.approx(r["finished_mono"] - r["created_mono"])
               for r in recs), recs
    assert [r["correct"] for r in sorted(recs, key=lambda r: int(r["id"].split("-")[-1]))] == [
        True, True, False] * 2


def test_report_summarises_a_submit_run_folder_as_one_row(tmp_path, capsys):
    """Rule: `report DIR` reads the run folder `submit --out DIR` wrote (DIR/latest): one row
    with the --rate asked for, created = every input sent, the completed, the lost (no answer
    within --timeout) and the accuracy over the labelled completed inputs, as submit said."""
    from tests.unit.test_submit_run import _run_with

    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((4, 1, 28, 28), np.float32), y=np.array([7, 3, -1, 7]))
    endpoint = _endpoint()
    assert _run_with(endpoint, lambda k: k != 1, [
        "submit", "--images", images, "--endpoint", endpoint, "--rate", "20",
        "--timeout", "1", "--out", str(tmp_path / "runs")]) == 1
    said = capsys.readouterr().out.splitlines()
    assert said[-2] == "4 sent: 3 completed, 1 lost", said
    assert said[-1].startswith("completed: accuracy 100.0 % (2 of 2 labelled)"), said
    assert cli.main(["report", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("run %s" % (tmp_path / "runs")) and (
        "(submit to %s)" % endpoint) in out[0], out
    assert out[1].split()[:9] == ["policy", "rate/s", "created", "completed", "lost",
                                  "measured", "mean", "ms", "p95"], out
    row = out[3].split()  # policy, rate, created, completed, lost, measured, mean, p95, accuracy
    assert row[:6] + row[8:9] == ["submit", "20.0", "4", "3", "1", "3", "1.000"], out


def test_an_interrupted_rate_run_records_its_inputs_in_flight_as_not_awaited(tmp_path):
    """Rule: Ctrl-C during a --rate run still ends with the interrupted line (exit 130), and
    every input sent has a record: those in flight then are lost, "not awaited"."""
    import signal

    from tests.unit.test_submit_run import REPO
    import subprocess
    import sys

    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((2, 1, 28, 28), np.float32))
    endpoint = _endpoint()
    ctx, sock = _silent_router(endpoint)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "submit", "--images", images, "--endpoint",
             endpoint, "--rate", "20", "--count", "100", "--timeout", "60", "--out",
             str(tmp_path / "runs")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            universal_newlines=True, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                       signal.SIG_DFL))
        for _ in range(2):  # two inputs are out: both in flight
            assert sock.poll(60000), "no input came"
            sock.recv_multipart()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        sock.close()
        ctx.term()
    assert proc.returncode == 130 and err == "", (proc.returncode, err)
    last = out.splitlines()[-1]
    assert last.startswith("interrupted (SIGINT): ") and " not sent" in last, out
    with open(str(tmp_path / "runs" / "latest" / "records.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    flying = int(last.split(": ")[1].split()[0])
    assert len(recs) == flying >= 2 and all(
        r["status"] == "lost" and r["reason"] == "not awaited: interrupted (SIGINT)"
        for r in recs), recs
    with open(str(tmp_path / "runs" / "latest" / "submit.json")) as f:
        assert json.load(f)["interrupted"] == "SIGINT"


@pytest.mark.parametrize("argv,why", [
    (["--rate", "0"], "--rate: must be in [0.01, 1e+06] inputs per second, got 0.0"),
    (["--rate", "nan"], "--rate: must be in [0.01, 1e+06] inputs per second, got nan"),
    (["--max-message-bytes", "0"], "--max-message-bytes: must be > 0"),
])
def test_a_rate_or_message_limit_out_of_range_is_one_error_line(tmp_path, capsys, argv, why):
    """Rule: --rate outside [0.01, 1e6] per second and --max-message-bytes <= 0 are refused in
    one line, exit 2, before anything is sent."""
    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((1, 1, 28, 28), np.float32))
    assert cli.main(["submit", "--images", images, "--endpoint", _endpoint()] + argv) == 2
    assert why in capsys.readouterr().err


def test_the_clients_default_limit_is_the_node_configs_and_a_larger_input_is_never_sent():
    """Rule: by default a client refuses, before sending, an input whose message is above the
    node config's default max_message_bytes (above twice it ZeroMQ would drop the connection
    with no answer): InputTooLarge names the size, the limit and the knob; nothing reaches the
    source. The blocking and the asyncio client alike."""
    from agent.config.node import NodeConfig

    limit = message_limit()
    assert limit == NodeConfig.__dataclass_fields__["max_message_bytes"].default
    big = np.zeros((1, 2 * limit // 4 + 1024), np.float32)  # above twice the limit
    endpoint = _endpoint()
    ctx, sock = _silent_router(endpoint)
    try:
        with Client(endpoint, ctx=ctx) as c:
            with pytest.raises(InputTooLarge) as got:
                c.send(big)
            assert c.sent_at == {}

        async def infer():
            async with AsyncClient(endpoint) as ac:
                return await ac.infer(big)
        with pytest.raises(InputTooLarge):
            asyncio.run(infer())
        assert not sock.poll(300), "an oversized input was sent"
    finally:
        sock.close()
        ctx.term()
    msg = str(got.value)
    assert ("of %d bytes" % big.nbytes) in msg and ("max_message_bytes %d (the node config's "
                                                     "default)" % limit) in msg, msg
    assert "above about twice that ZeroMQ drops the connection" in msg and "node config" in msg, msg


def test_a_limit_given_to_the_client_is_applied_and_named():
    """Rule: ``max_message_bytes=`` gives the fleet's own limit: an input between it and
    twice it is refused as one the source would refuse; a limit that is no positive whole
    number is a ValueError."""
    with Client(_endpoint(), max_message_bytes=4096) as c:
        with pytest.raises(InputTooLarge) as got:
            c.send(np.zeros((1, 1500), np.float32))  # 6000 bytes: between 1x and 2x
    assert "max_message_bytes 4096 (given)" in str(got.value) and (
        "the source would refuse it") in str(got.value)
    for bad in (0, -5, 1.5):
        with pytest.raises(ValueError):
            Client(_endpoint(), max_message_bytes=bad)
