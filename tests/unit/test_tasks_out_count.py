"""``edge_agent_tasks_out_total{stage}`` counts the tasks a worker handed on to the next stage
(sent, or held for a successor), not those the next stage received: a task held while no
successor lives and then dropped at its deadline is in it, and in ``drop_deadline``. A real
stage-1 engine in a real inference thread; the transport is built but never bound."""

from __future__ import annotations

import select
import time

import numpy as np
import zmq
from prometheus_client import generate_latest

from agent.config.node import parse_config
from agent.net.transport import Transport
from agent.node.build import build_view
from agent.node.capacity import Capacity, CapacityReport
from agent.node.inference import InferenceThread, Job
from agent.node.outbox import Outbox
from agent.node.worker import EXPIRES, WorkerSide
from agent.ops.metrics import AgentMetrics
from agent.policies.api import AgentPolicy
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from engines.loader import load_engine
from tests.unit.endpoints import loopback_endpoints


def _value(metrics, series):
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def test_a_task_handed_on_while_no_successor_lives_counts_out_and_dies_as_drop_deadline(
        tmp_path):
    """Rule: stage 1 ran, stage 2's only worker (w2) is gone: the task is counted out at once,
    held for a successor, and dropped at its deadline (``drop_deadline``); the out count stays:
    out counts hand-offs, the next stage's in counts arrivals."""
    ep = loopback_endpoints(("s1 c", "s1 d", "c", "d", "w2 c", "w2 d"))
    cfg = parse_config({
        "node_id": "w1", "role": "worker", "stage": 1, "bundle": DEMO_BUNDLE_DIR,
        "state_dir": str(tmp_path), "control_bind": ep["c"], "data_bind": ep["d"],
        "peers": [{"id": "s1", "stage": 0, "control_address": ep["s1 c"],
                   "data_address": ep["s1 d"]},
                  {"id": "w2", "stage": 2, "control_address": ep["w2 c"],
                   "data_address": ep["w2 d"]}]})
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    spec = bundle.stage(1)
    engine = load_engine(spec, backend="onnxruntime")
    runner = InferenceThread({1: engine}, {1: spec.flops})
    ctx = zmq.Context()
    transport = Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    metrics = AgentMetrics("w1")
    view = build_view(cfg, bundle, None)
    view.alive.add("s1")  # w2 not heard: no live successor for stage 2
    capacity = Capacity(CapacityReport(1e8, 0.01, 1e8, "timed"))
    out = Outbox(cfg, transport, AgentPolicy({2: 0.5, 3: 0.5}, {}), view, capacity,
                 lambda: runner.queued, metrics=metrics)
    side = WorkerSide(cfg, out, out.policy, {1: spec}, runner, capacity, metrics=metrics)
    runner.start()
    try:
        expires = time.monotonic() + 600.0
        meta = {"id": "t1", "attempt": 0, "source": "s1", "stage": 1, "hops": 0, "resends": 0,
                "created": 0.0, EXPIRES: expires}
        runner.submit(Job(meta=meta, x=np.zeros(spec.input_shape, spec.input_dtype), stage=1))
        while side.in_flight():
            ready, _, _ = select.select(side.wake_fds(), [], [], 30.0)
            assert ready, "inference thread gave no result within 30 s"
            side.on_fd(ready[0])
        out_series = 'edge_agent_tasks_out_total{node="w1",stage="1"}'
        assert _value(metrics, out_series) == 1.0
        assert [i.fields["id"] for i in out.waiting] == ["t1"] and not out.items
        out.expire_waiting(expires + 1.0)
        assert out.counters["drop_deadline"] == 1 and not out.waiting
        assert _value(metrics, out_series) == 1.0
    finally:
        runner.stop()
        engine.close()
        transport.close()
        ctx.term()
