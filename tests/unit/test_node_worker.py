"""The worker side carries out the exit decision through the outbox it is handed, with a real
onnxruntime engine in a real inference thread (the transport is built but never bound: a send
to a peer with no connection fails at once and the outbox keeps the item for a re-send)."""

from __future__ import annotations

import select

import numpy as np
import pytest
import zmq

from agent.config.node import parse_config
from agent.protocol import wire
from agent.net.transport import Transport
from agent.protocol.wire import Kind
from agent.node.build import build_view
from agent.node.capacity import Capacity, CapacityReport
from agent.node.inference import InferenceThread, Job
from agent.node.outbox import Outbox
from agent.node.outitem import OutItem, cut_off_from
from agent.node.worker import WorkerSide
from agent.policies.api import AgentPolicy
from engines.loader import load_engine
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.endpoints import loopback_endpoints

EP = loopback_endpoints((5541, 5542, 5551, 5552, 5561, 5562))  # free ports


def _raw(tmp_path):
    return {
        "node_id": "w1", "role": "worker", "stage": 1, "bundle": DEMO_BUNDLE_DIR,
        "state_dir": str(tmp_path), "control_bind": EP[5551],
        "data_bind": EP[5552],
        "peers": [{"id": "s1", "stage": 0, "control_address": EP[5541],
                   "data_address": EP[5542]},
                  {"id": "w2", "stage": 2, "control_address": EP[5561],
                   "data_address": EP[5562]}]}


def _cfg(tmp_path):
    return parse_config(_raw(tmp_path))


def _worker(tmp_path, threshold=0.0, metrics=None):
    """(side, out, spec) of a stage-1 worker whose stage-1 exit threshold is ``threshold``,
    until the generator is closed."""
    cfg = _cfg(tmp_path)
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    spec = bundle.stage(1)
    engine = load_engine(spec, backend="onnxruntime")
    runner = InferenceThread({1: engine}, {1: spec.flops})
    ctx = zmq.Context()
    transport = Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    view = build_view(cfg, bundle, None)
    view.alive.update({"s1", "w2"})
    capacity = Capacity(CapacityReport(1e8, 0.01, 1e8, "timed"))
    out = Outbox(cfg, transport, AgentPolicy({1: threshold, 2: 0.5, 3: 0.5}, {}), view,
                 capacity, lambda: runner.queued, metrics=metrics)
    side = WorkerSide(cfg, out, out.policy, {1: spec}, runner, capacity, metrics=metrics)
    runner.start()
    try:
        yield side, out, spec
    finally:
        runner.stop()
        engine.close()
        transport.close()
        ctx.term()


@pytest.fixture
def worker(tmp_path):
    yield from _worker(tmp_path)


def _run(side, out, spec, stage):
    x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
    meta = {"id": "t1", "attempt": 0, "source": "s1", "stage": stage, "hops": 0, "resends": 0,
            "created": 0.0}
    side.runner.submit(Job(meta=meta, x=x, stage=stage))
    while side.in_flight():
        ready, _, _ = select.select(side.wake_fds(), [], [], 30.0)
        assert ready, "inference thread gave no result within 30 s"
        side.on_fd(ready[0])


def test_a_confident_exit_hands_a_result_for_the_source_to_the_outbox(worker):
    """Threshold 0 at stage 1: every task exits there; the RESULT stays in custody."""
    side, out, spec = worker
    _run(side, out, spec, 1)
    assert out.counters["exited"] == 1
    (item,) = out.items.values()
    assert item.kind == Kind.RESULT and item.dest == "s1" and item.fields["exit_stage"] == 1
    assert item.key == "R:" + wire.task_key("t1", 0)


def test_a_job_for_a_stage_without_an_engine_is_dropped_and_counted_by_reason(worker):
    side, out, spec = worker
    _run(side, out, spec, 2)
    assert out.counters["drop_unknown_stage"] == 1
    assert out.counters["drop_engine_error"] == 0
    assert not out.items and not out.waiting


class _HoldAndReclaim(AgentPolicy):
    """Keeps every task (no successor chosen) and reclaims whenever the engine is idle."""

    def choose_successor(self, task, view, exclude):
        return None

    def keep_local(self, task, view):
        return False

    def reclaim(self, view):
        return view.input_queue == 0


def test_an_idle_worker_takes_a_held_task_back_only_for_a_stage_it_serves(tmp_path):
    """Idle reclaim: a task held in the output queue for a stage this worker also runs comes
    back to its own engine (one per decision); a task for a stage it lacks stays held."""
    raw = {
        "node_id": "w1", "role": "worker", "stage": 1, "last_stage": 2, "bundle": DEMO_BUNDLE_DIR,
        "state_dir": str(tmp_path), "control_bind": EP[5551],
        "data_bind": EP[5552], "policy": "mdi-exit",
        "peers": [{"id": "s1", "stage": 0, "control_address": EP[5541],
                   "data_address": EP[5542]},
                  {"id": "w3", "stage": 3, "control_address": EP[5561],
                   "data_address": EP[5562]}]}
    cfg = parse_config(raw)
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    specs = {h: bundle.stage(h) for h in (1, 2)}
    engines = {h: load_engine(s, backend="onnxruntime") for h, s in specs.items()}
    runner = InferenceThread(engines, {h: s.flops for h, s in specs.items()})
    ctx = zmq.Context()
    transport = Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    view = build_view(cfg, bundle, None)
    view.alive.update({"s1", "w3"})
    capacity = Capacity(CapacityReport(1e8, 0.01, 1e8, "timed"))
    out = Outbox(cfg, transport, _HoldAndReclaim({}, {}), view, capacity, lambda: runner.queued)
    side = WorkerSide(cfg, out, out.policy, specs, runner, capacity)
    runner.start()
    try:
        _run(side, out, specs[1], 1)
        assert out.counters["reclaimed"] == 1  # stage 2 came back and ran here
        (held,) = out.waiting
        assert held.fields["stage"] == 3 and held.fields["id"] == "t1"
        side.after_tick(0.0)
        assert out.counters["reclaimed"] == 1 and len(out.waiting) == 1
    finally:
        runner.stop()
        for e in engines.values():
            e.close()
        transport.close()
        ctx.term()


def test_intake_refuses_past_the_bound_drops_replays_and_expired_tasks(tmp_path):
    """With max_queue_tasks = 2 a third TASK is refused (overload) in the ACK, not queued; the
    same id again with a higher attempt (a re-issue) is checked like any task: refused too
    (overload); a copy of an attempt taken already is ACKed and runs nothing (duplicate_task),
    an attempt >= max_attempts is dropped, and a task whose ttl_s is used up is ACKed and
    dropped (deadline). All ACKs and refusals to one sender go out as one message
    per reason."""
    raw = dict(_raw(tmp_path), max_queue_tasks=2)
    cfg = parse_config(raw)
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    spec = bundle.stage(1)
    engine = load_engine(spec, backend="onnxruntime")
    runner = InferenceThread({1: engine}, {1: spec.flops})  # not started: jobs stay queued
    ctx = zmq.Context()
    transport = Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    view = build_view(cfg, bundle, None)
    view.alive.update({"s1", "w2"})
    out = Outbox(cfg, transport, AgentPolicy({}, {}), view, Capacity(), lambda: runner.queued)
    side = WorkerSide(cfg, out, out.policy, {1: spec}, runner, Capacity())
    x = np.zeros(spec.input_shape, dtype=spec.input_dtype)

    def task(tid, attempt=0, ttl_s=10.0):
        return wire.Message(Kind.TASK, "s1", fields={
            "id": tid, "source": "s1", "stage": 1, "attempt": attempt, "created": 0.0,
            "hops": 0, "resends": 0, "ttl_s": ttl_s}, tensors=[x])

    try:
        for msg in (task("a"), task("b"), task("c"), task("a", 1), task("a"), task("d", 5),
                    task("e", 0, 0.0)):
            side.on_data(b"s1", msg)
        assert side.held()[0] == 2 and side.input_queue() == 2
        assert out._replies == {(b"s1", ""): ["a#0", "b#0", "a#0", "e#0"],
                                (b"s1", "overload"): ["c#0", "a#1"]}
        assert (out.counters["duplicate_task"], out.counters["drop_bad_attempt"],
                out.counters["drop_deadline"], out.counters["refused_overload"]) == (1, 1, 1, 2)
    finally:
        runner.stop()
        engine.close()
        transport.close()
        ctx.term()


def test_a_task_from_a_node_that_is_not_a_peer_is_dropped_counted_and_logged(worker, caplog):
    """Only configured peers may send TASKs: one from another node (here "evil", naming the
    known source s1) is not ACKed, not queued, counted as unknown_sender and logged once with
    its sender; a peer's TASK still goes in."""
    side, out, spec = worker
    x = np.zeros(spec.input_shape, dtype=spec.input_dtype)

    def task(sender, tid):
        return wire.Message(Kind.TASK, sender, fields={
            "id": tid, "source": "s1", "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
            "resends": 0}, tensors=[x])

    with caplog.at_level("WARNING"):
        side.on_data(b"evil", task("evil", "t1"))
        side.on_data(b"evil", task("evil", "t2"))
    assert out.counters["drop_unknown_sender"] == 2 and not out._replies
    assert side.received == 0
    lines = [r.getMessage() for r in caplog.records if "dropped a message" in r.message]
    assert len(lines) == 1 and "from evil: a TASK from a node not among the peers" in lines[0]
    side.on_data(b"s1", task("s1", "t3"))
    assert out._replies == {(b"s1", ""): ["t3#0"]} and side.received == 1


def test_a_result_is_kept_for_its_restarting_source_until_the_tasks_deadline(worker):
    """A RESULT whose source cannot be reached (a restarted source not yet connected) is re-sent
    past the per-hop re-send limit until the task's deadline, then given up; a TASK is still
    given up after that limit (its source re-issues it)."""
    from agent.node.outbox import MAX_HOP_RESENDS
    from agent.node.outitem import OutItem

    _, out, _ = worker
    t = 1000.0
    result = OutItem(Kind.RESULT, "R:t1#0", {"id": "t1", "attempt": 0, "source": "s1",
                                            "exit_stage": 1, "cls": 1, "confidence": 0.9,
                                            "worker": "w1", "hops": 1, "resends": 0,
                                            "created": 0.0, "token": ""},
                     None, dest="s1", keep_until=t + 30.0)
    out.send(result, t)
    out.flush_results(t)  # as the loop does once per pass
    while t < 1020.0:  # the peer never answers: every send fails, backing off to ack_timeout_s
        t += 0.5
        out.run_timers(t, lambda key, now: None)
        out.flush_results(t)
    assert result.resends > MAX_HOP_RESENDS and len(out.items) == 1
    assert out.counters.get("drop_undeliverable", 0) == 0
    t = 1031.0
    out.run_timers(t, lambda key, now: None)
    assert len(out.items) == 0 and out.counters["drop_undeliverable"] == 1
    task = OutItem(Kind.TASK, "t2#0", {"id": "t2", "attempt": 0, "source": "s1", "stage": 2,
                                       "hops": 1, "resends": 0, "created": 0.0},
                   np.zeros((8, 14, 14), dtype=np.float32), expires=t + 30.0)
    out.send(task, t)
    while t < 1045.0 and out.items:
        t += 0.5
        out.run_timers(t, lambda key, now: None)
    assert len(out.items) == 0 and out.counters["drop_undeliverable"] == 2
    assert t < 1031.0 + 29.0  # given up on its re-send count, well before its deadline


def test_results_leave_as_one_results_message_per_source_each_kept_until_its_own_ack(tmp_path):
    """Results finished in one loop pass go to their source as one RESULTS message (the loop
    calls ``flush_results`` once per pass); custody stays per result: an ACK naming one key
    ends that result's custody only, and an unreachable source gets each result re-sent."""
    from agent.node.outitem import OutItem

    src = "ipc://%s/s1-data" % tmp_path
    raw = _raw(tmp_path)
    raw["peers"][0]["data_address"] = src
    cfg = parse_config(raw)
    ctx = zmq.Context()
    sink = ctx.socket(zmq.ROUTER)
    sink.bind(src)
    transport = Transport(ctx, cfg.node_id, "ipc://%s/w1-ctl" % tmp_path,
                          "ipc://%s/w1-data" % tmp_path, cfg.peers)
    try:
        transport.open()
        view = build_view(cfg, load_bundle(DEMO_BUNDLE_DIR), None)
        out = Outbox(cfg, transport, AgentPolicy({1: 0.0}, {}), view,
                     Capacity(CapacityReport(1e8, 0.01, 1e8, "timed")))
        t = out.clock()
        for i in range(3):
            out.send(OutItem(Kind.RESULT, "R:t%d#0" % i, {
                "id": "t%d" % i, "attempt": 0, "source": "s1", "exit_stage": 1, "cls": i,
                "confidence": 0.9, "worker": "w1", "hops": 1, "resends": 0, "created": 0.0,
                "token": "k%d" % i}, None, dest="s1"), t)
        assert sink.poll(100) == 0  # nothing leaves before the pass ends
        out.flush_results()
        assert sink.poll(10000), "the RESULTS message did not arrive"
        frames = sink.recv_multipart()
        msg = wire.decode(frames[1:])
        assert frames[0] == b"w1" and msg.kind == Kind.RESULTS
        assert [(f["id"], f["cls"], f["token"]) for f in msg.fields["items"]] == [
            ("t0", 0, "k0"), ("t1", 1, "k1"), ("t2", 2, "k2")]
        assert sink.poll(100) == 0  # one message for the three
        out.on_ack("s1", ["R:t1#0"], t)
        assert sorted(out.items) == ["R:t0#0", "R:t2#0"]
        out.run_timers(t + cfg.ack_timeout_s + 1.0, lambda key, now: None)  # no ACK: re-sent
        out.flush_results()
        assert sink.poll(10000)
        again = wire.decode(sink.recv_multipart()[1:])
        assert [f["id"] for f in again.fields["items"]] == ["t0", "t2"]
        assert [f["resends"] for f in again.fields["items"]] == [1, 1]
    finally:
        transport.close()
        sink.close(linger=0)
        ctx.term()


def task_message(i, x):
    """Stage-1 TASK ``t<i>`` from s1 with tensor ``x`` and a minute to live, as decoded."""
    return wire.Message(Kind.TASK, "s1", fields={
        "id": "t%d" % i, "source": "s1", "stage": 1, "attempt": 0, "created": 0.0,
        "hops": 0, "resends": 0, "ttl_s": 60.0}, tensors=[x])


def test_a_worker_on_one_core_runs_a_fast_engine_on_its_loop_thread(worker, monkeypatch):
    """CPU affinity of one core and a fast stage (measured service time <= INLINE_MAX_S): jobs
    run on the loop's thread in ``on_clock`` (no hand-off to a thread that could only take
    turns with the loop); the result goes on as from the thread. With more cores allowed
    again (re-read every AFFINITY_CHECK_S) jobs go to the inference thread."""
    import math

    from agent.node import worker as worker_module

    side, out, spec = worker
    x = np.zeros(spec.input_shape, dtype=spec.input_dtype)

    def task(i):
        return task_message(i, x)

    monkeypatch.setattr(worker_module.os, "sched_getaffinity", lambda pid: {0})
    out.view.service_time_s = worker_module.INLINE_MAX_S / 2
    side.on_clock(side.clock())
    assert side.inline
    side.on_data(b"s1", task(1))
    assert len(side.backlog) == 1 and side.runner.queued == 0
    assert side.wake_at() == -math.inf  # the loop polls without waiting
    side.on_clock(side.clock())
    assert not side.backlog and side.runner.queued == 0 and side.wake_at() is None
    assert out.counters["tasks_in"] == 1 and len(out.items) + len(out.waiting) == 1
    monkeypatch.setattr(worker_module.os, "sched_getaffinity", lambda pid: {0, 1})
    side._affinity_at = -math.inf  # as when AFFINITY_CHECK_S has passed
    side.on_clock(side.clock())
    assert not side.inline
    side.on_data(b"s1", task(2))
    assert not side.backlog and side.runner.queued == 1  # the thread's now
    _drain = select.select(side.wake_fds(), [], [], 30.0)[0]
    assert _drain, "inference thread gave no result within 30 s"


def test_duplicate_detection_forgets_a_task_once_no_copy_of_it_can_come(worker):
    """Rule: a task's duplicate-detection entry is dropped once its deadline is
    ``result_timeout_s`` past (its senders drop every copy at the deadline), at most a
    second late, so a busy worker's table holds its last minute's tasks, not SEEN_KEYS
    entries; a copy arriving before that is still a duplicate."""
    side, out, spec = worker
    x = np.zeros(spec.input_shape, dtype=spec.input_dtype)

    def task(tid):
        return wire.Message(Kind.TASK, "s1", fields={
            "id": tid, "source": "s1", "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
            "resends": 0, "ttl_s": 5.0}, tensors=[x])

    now = [1000.0]
    side.clock = lambda: now[0]
    side.on_data(b"s1", task("a"))
    now[0] += 3.0
    side.on_data(b"s1", task("b"))
    keep_s = side.cfg.result_timeout_s
    side.on_clock(now[0])
    assert set(side.seen) == {("a", 1), ("b", 1)}
    side.on_data(b"s1", task("a"))  # a copy before a's deadline: a duplicate still
    assert out.counters["duplicate_task"] == 1
    now[0] = 1000.0 + 5.0 + keep_s + 0.5  # a: past its deadline by keep_s; b: not yet
    side.on_clock(now[0])
    assert set(side.seen) == {("b", 1)}
    now[0] += 3.0
    side.on_clock(now[0])
    assert not side.seen


@pytest.mark.parametrize("threshold,answered", [(0.0, True), (2.0, False)])
def test_metrics_count_a_task_as_exited_or_passed_on_never_both(tmp_path, threshold, answered):
    """Rule: ``edge_agent_tasks_out_total`` counts tasks passed on to the next stage and
    ``edge_agent_tasks_exited_total`` tasks answered at this stage; an answer is not also
    counted as passed on (the two add up to the tasks served)."""
    from agent.ops.metrics import AgentMetrics

    metrics = AgentMetrics("w1")
    built = _worker(tmp_path, threshold, metrics)
    side, out, spec = next(built)
    try:
        _run(side, out, spec, 1)
    finally:
        built.close()

    def value(name):
        return metrics.registry.get_sample_value(name, {"node": "w1", "stage": "1"}) or 0.0

    (item,) = out.items.values()
    assert item.kind == (Kind.RESULT if answered else Kind.TASK)
    assert value("edge_agent_tasks_exited_total") == (1.0 if answered else 0.0)
    assert value("edge_agent_tasks_out_total") == (0.0 if answered else 1.0)


def test_a_task_whose_source_is_cut_off_is_refused_no_route(worker):
    """Rule: a worker cut off from a task's source -- heard before, now gone, no data
    connection to it, and results to it already held here undelivered -- refuses the task with
    no_route in its ACK, so the sender routes it to another worker of the stage instead of this
    one holding it while its result cannot go back. None of these alone refuses: a source not
    heard yet (start-up), one gone with no result waiting (a restarted source's first tasks),
    a task sent by the source itself (proof it is back), a data connection up again, or the
    source heard again."""
    side, out, spec = worker
    x = np.zeros(spec.input_shape, dtype=spec.input_dtype)

    def task(tid, sender="w2"):
        return wire.Message(Kind.TASK, sender, fields={
            "id": tid, "source": "s1", "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
            "resends": 0}, tensors=[x])

    out.view.alive.discard("s1")  # not heard yet: no peer_state entry
    side.on_data(b"w2", task("t1"))
    out.view.peer_state["s1"] = {"no_route": 0}  # heard, then gone: nothing held for it yet
    side.on_data(b"w2", task("t2"))
    held = OutItem(Kind.RESULT, "R:old#0", {"id": "old"}, None, dest="s1")
    out.items[held.key] = held  # a result to s1 waiting here: it cannot go back
    side.on_data(b"w2", task("t3"))
    side.on_data(b"s1", task("t4", "s1"))  # from the source itself: it is back
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        dealer.setsockopt(zmq.IMMEDIATE, 1)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        out.transport.dealers["s1"] = dealer  # its DEALER to the source: not connected yet
        side.on_data(b"w2", task("t5"))
        dealer.connect("tcp://127.0.0.1:%d" % port)  # the source back, its heartbeat not heard
        assert dealer.poll(30000, zmq.POLLOUT), "no connection to a bound ROUTER in 30 s"
        side.on_data(b"w2", task("t6"))
    finally:
        out.transport.dealers.pop("s1", None)
        dealer.close(0)
        router.close(0)
        ctx.term()
    out.view.alive.add("s1")  # heard again
    side.on_data(b"w2", task("t7"))
    assert out._replies == {(b"w2", ""): ["t1#0", "t2#0", "t6#0", "t7#0"],
                            (b"w2", "no_route", "s1"): ["t3#0", "t5#0"], (b"s1", ""): ["t4#0"]}
    assert out.counters["refused_no_route"] == 2 and side.received == 5


def test_a_worker_still_reaching_another_source_refuses_no_task_for_a_cut_off_one(worker):
    """Rule: a refusal holds the refusing worker off at its sender for every source's tasks,
    so while another of the worker's sources is alive, a task of a cut-off source (gone, no
    data connection, results held for it) is not refused: the sources it still reaches keep
    their route (the cut-off one's results wait out their deadline, as before)."""
    side, out, spec = worker
    out.view.alive.discard("s1")
    out.view.peer_state["s1"] = {"no_route": 0}
    held = OutItem(Kind.RESULT, "R:old#0", {"id": "old"}, None, dest="s1")
    out.items[held.key] = held
    assert cut_off_from("s1", "w2", out.view, out, {"s1"})
    out.view.alive.add("s2")
    assert not cut_off_from("s1", "w2", out.view, out, {"s1", "s2"})
    assert cut_off_from("s1", "w2", out.view, out, {"s1", "s3"})  # s3 not heard: no route
