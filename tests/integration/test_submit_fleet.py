"""``edge-agent submit`` against real agents (a client-mode source and two workers on the tiny
two-stage bundle, its ``max_message_bytes`` set to 4096): ``--rate`` with ``--out`` and
``report`` of the records, no run folder after a refused connection, and inputs above the
source's message limit, refused with an answer between the limit and twice it, dropped by
ZeroMQ above that, and refused by the client before sending when it knows the limit."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import zmq

from agent import cli
from agent.fleet.client import Client, InputTooLarge
from agent.fleet.client_wire import task_frames
from agent.protocol import wire
from agent.testbed.ports import free_ports
from tests.integration.agent_cluster import Cluster, build_two_stage_bundle

LIMIT = 4096  # the source's max_message_bytes: a tiny input (256 bytes) fits


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """(endpoint, replay file) of a running fleet: s1 (client mode) -> w1 -> w2."""
    root = str(tmp_path_factory.mktemp("submit-fleet"))
    bundle = build_two_stage_bundle(os.path.join(root, "tiny"))
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    c = Cluster(os.path.join(root, "agents"), bundle, {"s1": 0, "w1": 1, "w2": 2})
    try:
        c.start("w1")
        c.start("w2")
        c.start("s1", arrival="client", client_bind=endpoint, max_message_bytes=LIMIT)
        c.wait_for(lambda: c.alive_at("s1", ["w1"]), 60, "source to hear w1")
        yield endpoint, os.path.join(os.path.dirname(bundle), "replay.npz")
    finally:
        c.stop_all()


def test_a_rate_run_completes_every_input_and_report_reads_its_records(fleet, tmp_path, capsys):
    """Rule: `submit --rate R --out DIR` against a real fleet sends every input (each one in
    the summary) and writes one record per input that `report DIR` summarises as one row of
    rate R with the same counts."""
    endpoint, replay = fleet
    out = str(tmp_path / "runs")
    assert cli.main(["submit", "--images", replay, "--endpoint", endpoint, "--count", "20",
                     "--rate", "25", "--timeout", "30", "--out", out]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[-2] == "20 sent: 20 completed", said
    assert cli.main(["report", out]) == 0
    rows = capsys.readouterr().out.splitlines()
    row = rows[3].split()  # policy, rate, created, completed, lost, measured, ...
    assert row[:6] == ["submit", "25.0", "20", "20", "0", "20"], rows


@pytest.mark.parametrize("rate", [[], ["--rate", "25"]], ids=["one-at-a-time", "rate"])
def test_a_refused_connection_leaves_no_run_folder_for_report(fleet, tmp_path, capsys, rate):
    """Rule: `submit --out DIR` makes its run folder only once the connection is known good:
    one to an endpoint where nothing listens is one error line, exit 2, and DIR keeps only the
    runs that sent something (`latest` still the last of them; `report DIR` reads it alone)."""
    endpoint, replay = fleet
    out = str(tmp_path / "runs")
    assert cli.main(["submit", "--images", replay, "--endpoint", endpoint, "--count", "2",
                     "--timeout", "30", "--out", out] + rate) == 0
    runs = sorted(os.listdir(out))
    latest = os.readlink(os.path.join(out, "latest"))
    nothing = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    capsys.readouterr()
    assert cli.main(["submit", "--images", replay, "--endpoint", nothing, "--timeout", "30",
                     "--out", out] + rate) == 2
    err = capsys.readouterr().err
    assert "nothing listens there" in err and "64 input(s) not sent" in err, err
    assert sorted(os.listdir(out)) == runs and os.readlink(os.path.join(out, "latest")) == latest
    assert cli.main(["report", out]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[3].split()[2:4] == ["2", "2"], rows  # created, completed: the good run's


def test_an_input_between_the_limit_and_twice_it_stops_the_run_with_the_knob_named(
        fleet, tmp_path, capsys):
    """Rule: an input whose message is above the source's max_message_bytes but below twice
    it is answered error / bad_input by the source, whose detail names the message's size and
    its limit; submit (told no limit) stops at the first with one line naming the message
    size, the source's words and max_message_bytes in the source's node config, exit 2."""
    endpoint, _ = fleet
    images = str(tmp_path / "big.npz")
    np.savez(images, x=np.zeros((3, 1, 40, 40), np.float32))  # 6400 bytes each
    assert cli.main(["submit", "--images", images, "--endpoint", endpoint, "--timeout",
                     "30"]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines()[1].split()[1:3] == ["error", "bad_input"], out
    size = wire.frames_nbytes(task_frames(np.zeros((1, 1, 40, 40), np.float32), "submit-1",
                                          "submit"))  # give or take a header's number
    said = re.search(r"the source refused an input's message of (\d+) bytes as above its "
                     r"max_message_bytes \(oversized: message above max_message_bytes: (\d+) "
                     r"bytes, the limit is %d\)" % LIMIT, err)  # the source names both
    assert said and abs(int(said.group(1)) - size) < 32, err
    assert abs(int(said.group(2)) - size) < 32, err
    assert "raise max_message_bytes in the source's node config" in err and (
        "; 2 input(s) not sent") in err, err


def test_an_input_above_twice_the_limit_gets_no_answer_so_the_client_refuses_it(
        fleet, tmp_path, capsys):
    """Rule: a frame above twice the source's max_message_bytes (and the transport's 64 KiB
    of headroom) makes ZeroMQ drop the connection (no answer at all, which the agent cannot report); a client told the limit
    refuses such an input before sending, and so does `submit --max-message-bytes`, in one
    line naming the size, the limit and the knob, exit 2, nothing sent."""
    endpoint, _ = fleet
    # 90000 bytes: above twice 4096 and the 64 KiB of headroom the transport adds to it
    huge = np.zeros((1, 1, 150, 150), np.float32)
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    try:
        raw.connect(endpoint)
        fields = {"id": "huge", "source": "me", "stage": 1, "attempt": 0, "created": 0.0,
                  "hops": 0, "resends": 0}
        raw.send_multipart(wire.encode(wire.Kind.TASK, "me", fields, [huge]))
        assert not raw.poll(3000), "an input far above the limit was answered"
    finally:
        raw.close()
        ctx.term()
    with Client(endpoint, max_message_bytes=LIMIT) as c:
        with pytest.raises(InputTooLarge) as got:
            c.send(huge)
        assert c.sent_at == {}
        assert c.infer(np.zeros((1, 1, 8, 8), np.float32), 30).ok  # the source still serves
    assert "max_message_bytes %d (given)" % LIMIT in str(got.value), got.value
    assert "above about twice that ZeroMQ drops the connection" in str(got.value), got.value
    images = str(tmp_path / "huge.npz")
    np.savez(images, x=np.repeat(huge, 2, axis=0))
    assert cli.main(["submit", "--images", images, "--endpoint", endpoint,
                     "--max-message-bytes", str(LIMIT)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and ("input float32 (1, 1, 150, 150) of 90000 bytes") in err and (
        "max_message_bytes %d (given)" % LIMIT) in err and "2 input(s) not sent" in err, err
