"""A source whose every stage-1 worker is stopping (SIGTERM: ``systemctl stop`` or a rolling
upgrade of all of them, or of the only one) rejects a client's new input as ``no_route``, not
``overload``: the workers refuse new tasks in their ACK with reason ``shutdown`` while they
drain, nothing takes tasks now, and the fleet is not overloaded (records, ``rejected_by_reason``
and the client's answer say so); its ``retry_s`` is at least a heartbeat interval.

Real agent processes (a client source, a slow stage-1 worker, a stage-2 worker), real ZeroMQ
sockets, real onnxruntime engines."""

from __future__ import annotations

import os

import numpy as np
import pytest

from agent.fleet.client import Client

from .agent_cluster import Cluster, build_two_stage_bundle, stage_flops

BEAT_S = 0.2  # the Cluster's heartbeat_interval_s
QUEUED = 24  # inputs the stage-1 worker holds when it is stopped: its drain lasts their run
WANT_REJECTED = 3  # rejections of new inputs to see during the worker's drain


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("bundle")))


def test_inputs_while_every_stage_1_worker_stops_are_rejected_no_route_not_overload(
        bundle, tmp_path):
    """Rule: while the only stage-1 worker drains after SIGTERM (refusing new tasks with
    reason shutdown), a client's new input is answered rejected / no_route (nothing takes
    tasks now; the fleet is not overloaded) with retry_s at least the heartbeat interval, and
    recorded and counted as no_route; no input is rejected as overload."""
    endpoint = "ipc://" + os.path.join(str(tmp_path), "s1.client.sock")
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="fixed",
                thresholds=(0.01, 1.0), result_timeout_s=120.0)
    x = np.load(os.path.join(os.path.dirname(bundle), "replay.npz"))["x"][:1]
    rejected = []
    try:
        c.start("w2")
        # about 0.5 s a task: the inputs queued at the stop keep the drain going for seconds
        c.start("w1", emulate_capacity_flops=stage_flops(bundle, 1) * 2.0, drain_timeout_s=120.0)
        c.start("s1", arrival="client", client_bind=endpoint, drain_timeout_s=2.0)
        c.wait_for(lambda: c.alive_at("s1", ["w1"]) and c.alive_at("w1", ["w2"]), 60,
                   "the fleet to come up")
        with Client(endpoint, name="cam", ctx=None, timeout_s=300) as client:
            assert client.check_connection(30) == ""
            ids = [client.send(x) for _ in range(QUEUED)]
            first = client.wait_for(ids[0], 120)
            assert first.outcome == "completed", first  # w1 runs them one by one
            c.procs["w1"].terminate()
            c.wait_for(lambda: any("stopping:" in line for line in c.procs["w1"].log_lines(50)),
                       60, "w1 to begin its drain")
            # each new input: admitted while w1 is not held off (then refused by w1 and held
            # at the source), or rejected at once; the rejections are counted until enough are
            # seen (the answers to the inputs w1 drains come meanwhile)
            while len(rejected) < WANT_REJECTED and c.procs["w1"].poll() is None:
                client.send(x)
                ans = client.receive(1.0)
                while ans is not None:
                    if ans.outcome == "rejected":
                        rejected.append((ans.reason, ans.retry_s))
                    ans = client.receive(0.1)
            assert len(rejected) >= WANT_REJECTED, ("w1 ended its drain before %d inputs "
                                                    "were rejected: %s" % (WANT_REJECTED,
                                                                           rejected))
    finally:
        c.stop_all()
    assert {r for r, _ in rejected} == {"no_route"}, rejected
    assert all(retry_s >= BEAT_S for _, retry_s in rejected), rejected
    recs = [r["reason"] for r in c.records("s1") if r["status"] == "rejected"]
    assert recs and "overload" not in recs, recs
    assert "overload" not in c.stats("s1")["rejected_by_reason"]
