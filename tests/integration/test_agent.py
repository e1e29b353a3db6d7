"""Agents as real processes on loopback: sources, workers, records, policies, clean shutdown."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zmq

from agent.protocol import wire
from agent.protocol.wire import Kind
from agent.testbed.ports import free_ports
from tests.integration.agent_cluster import REPO, Cluster, build_two_stage_bundle, stage_flops


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _wait_serving(c) -> None:
    """Until both stage-1 workers run (engines loaded) and hear w2: a source started beside
    workers still loading holds its first 32 tasks and rejects the next ones with no_route (a
    slow start on a loaded machine did so), which is a rule of its own, not these tests'."""
    c.wait_for(lambda: c.alive_at("w1a", ["w2"]) and c.alive_at("w1b", ["w2"]), 60,
               "stage-1 workers serving, hearing w2")


def test_every_created_task_is_recorded_once_and_sigterm_shuts_down_cleanly(bundle, tmp_path):
    """Source -> 2 stage-1 workers -> 1 stage-2 worker with the fixed policy and emulated links:
    each created task has exactly one record (completed, with exit stage, class, label and confidence), and every
    agent exits 0 on SIGTERM."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1a": 1, "w1b": 1, "w2": 2}, policy="fixed",
                thresholds=(0.6, 1.0), emulate_links=True)
    try:
        for n in ("w1a", "w1b", "w2"):
            c.start(n)
        _wait_serving(c)
        c.start("s1", arrival_rate_tasks_s=25.0, max_tasks=40)
        c.wait_for(lambda: c.finished("s1", 40), 90, "40 tasks answered")
    finally:
        c.stop_all()
    assert all(p.returncode == 0 for p in c.procs.values()), {n: p.returncode for n, p in c.procs.items()}
    recs = c.records("s1")
    assert len(recs) == 40 and len({r["id"] for r in recs}) == 40
    assert all(r["status"] == "completed" for r in recs)
    assert {r["exit_stage"] for r in recs} <= {1, 2}
    for r in recs:
        assert r["label"] in (0, 1, 2) and r["correct"] == (r["cls"] == r["label"])
        assert r["finished_mono"] >= r["created_mono"] and 0 < r["confidence"] <= 1
        assert r["worker"] in ("w1a", "w1b", "w2")
    # Stage-1 exits happen exactly when the head's confidence reaches the threshold 0.6.
    assert all(r["confidence"] >= 0.6 for r in recs if r["exit_stage"] == 1)
    stats = c.stats("w1a")
    assert stats["dropped"] == 0, {k: v for k, v in stats["counters"].items()
                                   if k.startswith("drop_") and v}
    assert stats["policy"] == "fixed"
    with open(os.path.join(str(tmp_path), "w1a", "state.json")) as f:  # saved at shutdown
        assert json.load(f)["state"]["policy"] == "fixed"


def test_dtoee_moves_routing_mass_to_the_faster_worker(bundle, tmp_path):
    """With w1a emulated 10x slower than w1b, the source's DTO-EE routing after a few slots
    sends most tasks to w1b, and no task is lost while routing changes."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1a": 1, "w1b": 1, "w2": 2}, policy="dtoee",
                slot_length_s=1.0, rounds_per_slot=10, round_interval_s=0.03)
    try:
        c.start("w1a", emulate_capacity_flops=stage_flops(bundle, 1) * 20.0)  # 50 ms per task
        c.start("w1b", emulate_capacity_flops=stage_flops(bundle, 1) * 200.0)  # 5 ms per task
        c.start("w2")
        _wait_serving(c)
        c.start("s1", arrival_rate_tasks_s=15.0, max_tasks=75)
        c.wait_for(lambda: c.finished("s1", 75), 120, "75 tasks answered")
    finally:
        c.stop_all()
    routing = c.stats("s1")["routing"]  # final stats, written at shutdown
    assert routing["w1b"] > routing["w1a"], routing
    assert c.tasks("s1")["completed"] == 75 and c.tasks("s1")["lost"] == 0


def test_bad_config_fails_with_one_line_naming_the_field(tmp_path):
    """`edge-agent run` on a bad config: one line naming the field, exit 78 (EXIT_CONFIG)."""
    path = tmp_path / "node.toml"
    path.write_text('node_id = "w1"\nrole = "worker"\nstage = 1\nbundle = "b"\nstate_dir = "s"\n'
                    'control_bind = "tcp://127.0.0.1:1"\ndata_bind = "nowhere"\n')
    out = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(path)],
                         capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    assert out.returncode == 78
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "data_bind: must be a ZeroMQ endpoint" in lines[0], out.stderr


def test_a_local_client_pushes_tasks_and_gets_each_result_back(bundle, tmp_path):
    """arrival = "client": tasks pushed over the source's client socket are answered with a
    RESULT carrying the client's own id; a task of the wrong shape, with NaN values or with
    values far outside the replay set's (unscaled images) is counted and answered with an
    error (outcome "error", reason "bad_input"), and so is one
    whose tensor the wire check refuses (a uint16 frame), by the id in its header."""
    port = free_ports(1)[0]
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2})
    ctx = zmq.Context()
    try:
        c.start("w1")
        c.start("w2")
        c.start("s1", arrival="client", client_bind="tcp://127.0.0.1:%d" % port)
        c.wait_for(lambda: c.alive_at("s1", ["w1"]), 60, "source to hear w1")
        client = ctx.socket(zmq.DEALER)
        client.setsockopt(zmq.LINGER, 0)
        client.connect("tcp://127.0.0.1:%d" % port)
        fields = {"source": "me", "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
                  "resends": 0}
        bad = np.zeros((1, 3, 8, 8), np.float32)
        client.send_multipart(wire.encode(Kind.TASK, "cam", dict(fields, id="bad"), [bad]))
        nan = np.full((1, 1, 8, 8), np.nan, np.float32)  # right shape, not a number
        client.send_multipart(wire.encode(Kind.TASK, "cam", dict(fields, id="nan"), [nan]))
        u16 = np.zeros((1, 1, 8, 8), np.uint16)  # a dtype the wire does not carry
        client.send_multipart(wire.encode(Kind.TASK, "cam", dict(fields, id="u16"), [u16]))
        big = np.full((1, 1, 8, 8), 250.0, np.float32)  # far outside the replay set's values
        client.send_multipart(wire.encode(Kind.TASK, "cam", dict(fields, id="big"), [big]))
        for i in range(5):
            x = np.full((1, 1, 8, 8), i / 5.0, np.float32)
            client.send_multipart(wire.encode(Kind.TASK, "cam", dict(fields, id="q%d" % i), [x]))
        got = {}
        poller = zmq.Poller()
        poller.register(client, zmq.POLLIN)
        while len(got) < 9 and poller.poll(60000):
            msg = wire.decode(client.recv_multipart())
            got[msg.fields["id"]] = msg
        c.wait_for(lambda: (c.stats("s1") or {}).get("counters", {}).get("drop_bad_shape") == 1,
                   30, "the bad task counted")
        log = "\n".join(c.procs["s1"].log_lines(400, 1 << 18))
    finally:
        c.stop_all()
        ctx.destroy(linger=0)
    assert sorted(got) == ["bad", "big", "nan"] + ["q%d" % i for i in range(5)] + ["u16"]
    # answered too: an error, not silence, with a detail line that says what was wrong
    details = {}
    for tid in ("bad", "nan", "u16", "big"):
        bad = got.pop(tid)
        assert (bad.fields["outcome"], bad.fields["reason"], bad.fields["cls"]) == \
            ("error", "bad_input", -1)
        details[tid] = bad.fields["detail"]
    assert details["bad"] == "input float32 (1, 3, 8, 8); stage 1 takes float32 (1, 1, 8, 8)"
    assert details["nan"].startswith("input holds NaN, inf or values beyond")
    assert "uint16" in details["u16"] and "not allowed" in details["u16"], details
    assert details["big"].startswith("input values in [250, 250], far outside the ") and (
        "of the source's replay set: scale it as the model's inputs are" in details["big"])
    assert all(m.kind == Kind.RESULT and m.fields["exit_stage"] in (1, 2)
               and m.fields["outcome"] == "completed" for m in got.values())
    recs = c.records("s1")
    assert len(recs) == 5 and all(r["status"] == "completed" and r["label"] is None for r in recs)
    # the first refused input is logged at once, naming what was wrong (later ones once a minute)
    assert ": a client's input float32 (1, 3, 8, 8); stage 1 takes float32 (1, 1, 8, 8) " \
           "(answered error, bad_input)" in log, log


def test_a_worker_holding_both_stages_runs_them_in_turn(bundle, tmp_path):
    """A worker with ``last_stage`` = 2 loads both engines and, by default, runs a task's next
    stage itself (counted as kept_local); every task is answered by it."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w12": 1}, policy="fixed", thresholds=(0.99, 1.0))
    try:
        c.start("w12", last_stage=2)
        c.start("s1", arrival_rate_tasks_s=25.0, max_tasks=20)
        c.wait_for(lambda: c.finished("s1", 20), 60, "20 tasks answered")
    finally:
        c.stop_all()
    stats = c.stats("w12")  # final stats, written at shutdown
    recs = c.records("s1")
    assert len(recs) == 20 and all(r["status"] == "completed" and r["worker"] == "w12" for r in recs)
    finals = [r for r in recs if r["exit_stage"] == 2]
    assert finals and stats["counters"]["kept_local"] == len(finals)
