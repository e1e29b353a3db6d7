"""The ``stopping:`` line an agent logs on SIGTERM gives its queues as they are at the stop
(real agent process on loopback, a raw DEALER as its source).

Worker ``w1`` holds both stages of the tiny bundle, so it needs no successor, and emulates a
device so slow (100 FLOP/s) that the first task it takes stays in its engine for a minute: every task sent
after it waits in its input queue. Its heartbeats and its policy's ticks are minutes apart
(``mdi-exit`` ticks every ``state_interval_s``), and no neighbour speaks to it, so nothing
else brings its figures up to date between the tasks' arrival and the stop."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import zmq

from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.integration.agent_cluster import Cluster, build_two_stage_bundle

TASKS = 4


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _acks(sock, want: int, timeout_s: float = 60.0) -> list:
    """The ACKs' (key, refusal reason or "") received on ``sock`` until ``want`` came (or
    ``timeout_s`` passed without one)."""
    got = []
    while len(got) < want and sock.poll(int(timeout_s * 1000)):
        msg = wire.decode(sock.recv_multipart())
        if msg.kind == Kind.ACK:
            refused = set(msg.fields.get("refused", ()))
            got += [(k, msg.fields.get("reason", "") if k in refused else "")
                    for k in msg.fields["keys"]]
    return got


def test_the_status_stopping_and_stopped_lines_count_the_tasks_queued_now(bundle, tmp_path):
    """Rule: the INFO line ``stopping: ...`` logged on SIGTERM shows the input queue the
    worker holds at that moment (TASKS taken in, one in the engine, the rest waiting), the
    count its drain line also reports (``of N queued``), not the figure of the last
    heartbeat or tick (0, from before the tasks came); so do the periodic status line
    before the stop and the ``stopped: ...`` line after the drain (all abandoned, still
    held)."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1})
    x = np.load(os.path.join(os.path.dirname(bundle), "replay.npz"))["x"][:1]
    ctx = zmq.Context()
    src = ctx.socket(zmq.DEALER)
    src.setsockopt(zmq.LINGER, 0)
    src.setsockopt(zmq.ROUTING_ID, b"s1")  # the source w1's config names
    try:
        c.start("w1", last_stage=2, policy="mdi-exit",
                policy_knobs={"state_interval_s": 600.0, "admission_control": False},
                heartbeat_interval_s=300.0, neighbour_timeout_rounds=2, start_grace_s=600.0,
                emulate_capacity_flops=100.0, result_timeout_s=3600.0, drain_timeout_s=0.5,
                max_queue_tasks=80)  # mdi-exit's queue rules want 80 (a warning below)
        c.wait_for(lambda: "serving:" in c.tail("w1", 50), 90, "w1 to serve")
        src.connect(c.config("w1").data_bind.replace("0.0.0.0", "127.0.0.1"))
        for i in range(TASKS):
            fields = {"id": "t%d" % i, "source": "s1", "stage": 1, "attempt": 0,
                      "created": 0.0, "hops": 0, "resends": 0}
            src.send_multipart(wire.encode(Kind.TASK, "s1", fields, [x]))
        acks = _acks(src, TASKS)
        assert [why for _, why in acks] == [""] * TASKS, (acks, c.tail("w1", 50))
        c.wait_for(lambda: "w1 alive=0 queue=%d/0 " % TASKS in c.tail("w1", 50), 60,
                   "w1's status line with the tasks queued")
        c.procs["w1"].terminate()
        c.wait_for(lambda: c.procs["w1"].poll() is not None, 60, "w1 to exit")
    finally:
        c.stop_all()
        src.close(0)
        ctx.term()
    log = c.tail("w1", 400)
    stopping = [line for line in log.splitlines() if " stopping: " in line]
    assert len(stopping) == 1, log
    queued = re.search(r"of (\d+) queued", log)
    assert queued is not None, log
    assert int(queued.group(1)) == TASKS, log
    stopped = [line for line in log.splitlines() if " stopped: " in line]
    assert "abandoned %d queued" % TASKS in log, log
    for line in stopping + stopped:
        assert " queue=%d/0 " % TASKS in line, log
