"""Fault tolerance with real processes and sockets: a worker killed mid-run, a flood of malformed
frames on the data and control planes, and a worker that joins late."""

from __future__ import annotations

import random
import time

import msgpack
import numpy as np
import pytest
import zmq

from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.integration.agent_cluster import Cluster, build_two_stage_bundle, stage_flops


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def test_killing_a_worker_mid_run_loses_no_task(bundle, tmp_path):
    """SIGKILL one of two stage-1 workers while it holds queued tasks: every created task still
    gets a result (those it held after a re-send), none is lost."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1a": 1, "w1b": 1, "w2": 2}, policy="fixed",
                result_timeout_s=3.0, max_attempts=4)
    try:
        c.start("w1a", emulate_capacity_flops=stage_flops(bundle, 1) * 8.0)  # 125 ms per task: a queue builds
        c.start("w1b")
        c.start("w2")
        # the source once both stage-1 workers serve: started beside workers still loading,
        # it holds its first 32 tasks and rejects the next ones with no_route
        c.wait_for(lambda: c.alive_at("w1a", ["w2"]) and c.alive_at("w1b", ["w2"]), 60,
                   "stage-1 workers serving, hearing w2")
        c.start("s1", arrival_rate_tasks_s=20.0, max_tasks=60)
        # the kill must find the source knowing its other stage-1 worker: killed before w1b's
        # first heartbeat reached it, the source has no live route for a moment and rejects a
        # task with no_route (an answer, but not the rule checked here)
        c.wait_for(lambda: (c.stats("w1a") or {}).get("input_queue", 0) >= 2
                   and c.alive_at("s1", ["w1a", "w1b"]), 60,
                   "w1a to hold queued tasks, with both stage-1 workers known to the source")
        c.kill("w1a")
        c.wait_for(lambda: c.finished("s1", 60), 90, "all 60 tasks answered")
    finally:
        c.stop_all()
    recs = c.records("s1")
    assert len(recs) == 60 and all(r["status"] == "completed" for r in recs), \
        [r for r in recs if r["status"] != "completed"]
    assert any(r["attempts"] > 1 or r["resends"] > 0 for r in recs)
    assert c.tasks("s1")["lost"] == 0


def _junk_data(rng: random.Random, i: int) -> list:
    """One malformed data-plane message (what each variant is is in the comments)."""
    good = {"v": wire.VERSION, "k": int(Kind.TASK), "from": "s1", "slot": 0, "round": 0,
            "t": [["float32", [1, 1, 8, 8]]], "id": "j%d" % i, "source": "s1", "stage": 1,
            "attempt": 0, "created": 0.0, "hops": 0, "resends": 0}
    x = np.zeros((1, 1, 8, 8), np.float32).tobytes()
    kind = i % 8
    if kind == 0:  # random bytes
        return [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))]
    if kind == 1:  # truncated header
        h = msgpack.packb(good)
        return [h[:rng.randint(1, len(h) - 1)], x]
    if kind == 2:  # another protocol version
        return [msgpack.packb(dict(good, v=wire.VERSION + 1)), x]
    if kind == 3:  # wrong shape for stage 1 (bytes consistent with the header)
        return [msgpack.packb(dict(good, t=[["float32", [1, 2, 8, 8]]])), x + x]
    if kind == 4:  # wrong dtype
        return [msgpack.packb(dict(good, t=[["float64", [1, 1, 8, 8]]])), x + x]
    if kind == 5:  # tensor bytes do not match the header
        return [msgpack.packb(good), x[:100]]
    if kind == 6 and i % 80 == 6:  # above the agent's max_message_bytes (1 MiB here)
        return [msgpack.packb(good), bytes(1200 * 1024)]
    if kind == 6:  # oversized header
        return [b"\x80" + b"x" * (wire.MAX_HEADER_BYTES + 10)]
    return [msgpack.packb(dict(good, source="nobody")), x]  # task of an unknown source


def _junk_control(rng: random.Random, i: int) -> list:
    topic = wire.topic("w1a" if i % 2 else wire.BROADCAST)
    kind = i % 5
    if kind == 0:
        return [topic, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))]
    if kind == 1:
        h = msgpack.packb({"v": wire.VERSION, "k": int(Kind.HEARTBEAT), "from": "x1"})
        return [topic, h[:-3]]
    if kind == 2:
        return [topic, msgpack.packb({"v": 7, "k": int(Kind.HEARTBEAT), "from": "x1"})]
    if kind == 3:  # well-formed heartbeat from a node nobody configured
        return [topic] + wire.encode(Kind.HEARTBEAT, "intruder", {
            "role": "worker", "stage": 1, "capacity_flops": 1.0, "input_queue": 0,
            "output_queue": 0, "service_time_s": 0.1})
    return [topic, msgpack.packb({"v": wire.VERSION, "k": 999, "from": "x1"})]  # unknown kind


def _dropped(c: Cluster, node: str) -> int:
    return (c.stats(node) or {}).get("dropped", 0)


def test_ten_thousand_malformed_frames_are_counted_and_the_agent_keeps_serving(bundle, tmp_path):
    """5,000 malformed messages at a worker's ROUTER and 5,000 at its SUB (from a configured
    peer's address): each is counted as dropped, the worker never crashes, and afterwards it
    serves a source's tasks to completion."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1a": 1, "w2": 2, "x1": 0})
    ctx = zmq.Context()
    rng = random.Random(3)
    try:
        c.start("w1a", max_message_bytes=1 << 20, status_interval_s=0.2)
        c.start("w2")
        c.wait_for(lambda: c.stats("w1a") is not None, 60, "w1a up")
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.ROUTING_ID, b"s1")  # speaks as s1, as its frames say
        dealer.connect(c.peer("w1a").data_address)
        for i in range(5000):
            dealer.send_multipart(_junk_data(rng, i))
        c.wait_for(lambda: _dropped(c, "w1a") >= 5000, 60, "5000 data-plane drops counted")
        pub = ctx.socket(zmq.PUB)  # pretends to be the configured peer x1
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, 0)  # queue instead of dropping, so every frame arrives
        pub.bind(c.peer("x1").control_address)
        # The SUB reconnects to the new PUB within its reconnect interval (until then PUB drops
        # everything): send valid heartbeats as x1 until w1a has heard one.
        hb = [wire.topic(wire.BROADCAST)] + wire.encode(Kind.HEARTBEAT, "x1", {
            "role": "source", "stage": 0, "capacity_flops": 0.0, "input_queue": 0,
            "output_queue": 0, "service_time_s": 0.0})
        end = time.monotonic() + 60
        while not c.alive_at("w1a", ["x1"]) and time.monotonic() < end:
            pub.send_multipart(hb)
            time.sleep(0.1)
        for i in range(5000):
            pub.send_multipart(_junk_control(rng, i))
        c.wait_for(lambda: _dropped(c, "w1a") >= 10000, 60, "10000 drops counted")
        c.start("s1", arrival_rate_tasks_s=20.0, max_tasks=20)
        c.wait_for(lambda: c.finished("s1", 20), 60, "20 tasks answered after the flood")
    finally:
        c.stop_all()
        ctx.destroy(linger=0)
    stats = c.stats("w1a")
    assert c.procs["w1a"].returncode == 0
    assert stats["dropped"] == 10000, stats["counters"]
    counters = stats["counters"]
    for reason in ("bad_header", "bad_version", "bad_shape", "bad_tensor", "oversized",
                   "unknown_source", "unknown_sender", "bad_kind"):
        assert counters.get("drop_" + reason, 0) > 0, (reason, counters)
    assert c.tasks("s1")["completed"] == 20


def test_a_worker_that_joins_late_is_picked_up_by_routing(bundle, tmp_path):
    """w1b is configured but starts only after tasks are flowing through w1a; DTO-EE's
    routing at the source then sends it tasks, and nothing is lost meanwhile."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1a": 1, "w1b": 1, "w2": 2}, policy="dtoee",
                slot_length_s=1.0, rounds_per_slot=10, round_interval_s=0.03)
    try:
        c.start("w1a", emulate_capacity_flops=stage_flops(bundle, 1) * 40.0)  # 25 ms per task
        c.start("w2")
        c.start("s1", arrival_rate_tasks_s=20.0, max_tasks=400)
        c.wait_for(lambda: c.tasks("s1").get("completed", 0) >= 20, 60, "tasks flowing via w1a")
        assert (c.stats("w1b") is None)
        c.start("w1b", emulate_capacity_flops=stage_flops(bundle, 1) * 400.0)
        c.wait_for(lambda: (c.stats("w1b") or {}).get("counters", {}).get("tasks_in", 0) >= 5,
                   60, "w1b to receive tasks")
    finally:
        c.stop_all()
    routing = c.stats("s1")["routing"]  # final stats, written at shutdown
    assert c.stats("w1b")["counters"]["tasks_in"] >= 5
    assert routing["w1b"] > 0, routing
    assert c.tasks("s1")["lost"] == 0
