"""The take-back of a tier's escalation (``agent.node.worker_tier``, ``agent.node.out_takeback``):
a real worker side and outbox (demo bundle on onnxruntime, ZeroMQ transport) whose only higher
tier, ``cloud``, goes with the escalation in custody."""

from __future__ import annotations

import select

import numpy as np
import pytest
import zmq

from agent.config.node import parse_config
from agent.net.transport import Transport
from agent.node.build import build_view
from agent.node.capacity import Capacity, CapacityReport
from agent.node.head_logits import LogitsInferenceThread
from agent.node.outbox import Outbox
from agent.node.worker import WorkerSide
from agent.policies.api import ANSWER, ESCALATE, AgentPolicy, HeadAction
from agent.policies.mlci.agent import MlciPolicy
from agent.protocol import wire
from agent.protocol.wire import Kind
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from engines.loader import load_engine
from tests.unit.endpoints import loopback_endpoints

BUNDLE = load_bundle(DEMO_BUNDLE_DIR)
KEPT_CLS, KEPT_CONF = 7, 0.625  # the answer the tier gives if it keeps the task


class _Tier(AgentPolicy):
    """Escalate at stage 1 to ``cloud`` while it is alive, carrying the answer kept here."""

    def __init__(self, kept=True):
        super().__init__({}, {})
        self.kept = 0
        self.answers = kept  # False: no answer of its own for an escalation (the base rule)

    def on_head(self, head, view):
        return HeadAction(ESCALATE, cls=KEPT_CLS, confidence=KEPT_CONF, fields={"level": 1})

    def choose_successor(self, task, view, exclude=()):
        return "cloud" if "cloud" in view.alive_successors(task.stage) else None

    def answer_kept(self, escalated):
        if not self.answers:
            return super().answer_kept(escalated)
        self.kept += 1
        return HeadAction(ANSWER, cls=escalated.cls, confidence=escalated.confidence,
                          fields={"level": 0})


@pytest.fixture
def tier(tmp_path):
    ep = loopback_endpoints(range(6))
    raw = {"node_id": "edge", "role": "worker", "stage": 1, "last_stage": 1, "terminal": True,
           "bundle": DEMO_BUNDLE_DIR, "state_dir": str(tmp_path),
           "control_bind": ep[0], "data_bind": ep[1],
           "peers": [{"id": "s1", "stage": 0, "control_address": ep[2], "data_address": ep[3]},
                     {"id": "cloud", "stage": 1, "last_stage": 4, "control_address": ep[4],
                      "data_address": ep[5]}]}
    cfg = parse_config(raw)
    specs = {1: BUNDLE.stage(1)}
    engines = {1: load_engine(specs[1], backend="onnxruntime")}
    runner = LogitsInferenceThread(engines, {1: specs[1].flops})
    ctx = zmq.Context()
    transport = Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    view = build_view(cfg, BUNDLE, None)
    capacity = Capacity(CapacityReport(1e8, 0.01, 1e8, "timed"))

    def make(policy):
        out = Outbox(cfg, transport, policy, view, capacity, lambda: runner.queued)
        return WorkerSide(cfg, out, policy, specs, runner, capacity), out, view

    runner.start()
    yield make
    runner.stop()
    engines[1].close()
    transport.close()
    ctx.term()


def _escalate_one(side, out, view):
    """Deliver one task with the cloud alive; its escalation is sent, in custody."""
    view.alive.add("cloud")
    x = np.zeros((1, 1, 28, 28), np.float32)
    task = {"id": "t1", "source": "s1", "stage": 1, "attempt": 0, "created": 1.0, "hops": 0,
            "resends": 0, "token": "abc", "ttl_s": 30.0}
    side.on_data(b"id", wire.decode(wire.encode(Kind.TASK, "s1", task, [x])))
    while side.in_flight():
        ready, _, _ = select.select(side.wake_fds(), [], [], 30.0)
        assert ready, "inference thread gave no result within 30 s"
        side.on_fd(ready[0])
    key = wire.task_key("t1", 0)
    assert out.counters["escalated"] == 1 and out.items[key].dest == "cloud"
    return key


def _results(out):
    return [i for i in out.items.values() if i.kind == Kind.RESULT]


def test_an_escalation_whose_only_higher_tier_goes_is_answered_here_once(tier):
    """The cloud goes with the escalation sent and not ACKed: at its ACK deadline the outbox
    hands it back and the tier answers the task with its own answer (``taken_back``), one
    RESULT to the source; a late ACK of the escalation and later passes make no second."""
    side, out, view = tier(_Tier())
    key = _escalate_one(side, out, view)
    view.alive.discard("cloud")
    due = out.items[key].deadline + 0.01
    out.run_timers(due, lambda k, now: None)
    assert out.counters["taken_back"] == 1 and side.policy.kept == 1
    assert key not in out.items and not out.waiting
    (res,) = _results(out)
    assert res.dest == "s1" and res.key == "R:" + key
    assert (res.fields["cls"], res.fields["confidence"], res.fields["level"]) == (
        KEPT_CLS, KEPT_CONF, 0)
    assert res.fields["token"] == "abc" and res.fields["worker"] == "edge"
    out.on_ack("cloud", [key], due)  # the cloud's late ACK: custody ended already
    out.retry_waiting(due)
    out.run_timers(due + 0.01, lambda k, now: None)
    assert len(_results(out)) == 1 and out.counters["taken_back"] == 1
    assert out.counters["ack_not_sent_cloud"] == 0 and out.counters["acked"] == 0


def test_an_escalation_held_for_a_busy_higher_tier_waits_and_one_gone_later_is_taken_back(
        tier):
    """A higher tier alive but refusing (busy) keeps the escalation held, not answered here;
    once that tier is gone, the next offer of held tasks hands it back."""
    side, out, view = tier(_Tier())
    key = _escalate_one(side, out, view)
    now = out.clock()
    view.unavailable["cloud"] = 1e18  # busy for longer than the test (a hold ends in 1 s)
    out.on_ack("cloud", [], now, refused=[key], retry_s=1.0, reason="overload")
    assert [i.key for i in out.waiting] == [key] and out.counters["taken_back"] == 0
    view.alive.discard("cloud")
    out.retry_waiting(now)
    assert not out.waiting and out.counters["taken_back"] == 1 and len(_results(out)) == 1


def test_an_escalation_without_an_answer_kept_waits_as_before(tier):
    """A policy whose ``answer_kept`` is the base rule's (None) takes nothing back: its
    escalation, its successor gone, is held (until the successor comes back or its deadline),
    and offered again as before."""
    side, out, view = tier(_Tier(kept=False))
    key = _escalate_one(side, out, view)
    view.alive.discard("cloud")
    due = out.items[key].deadline + 0.01
    out.run_timers(due, lambda k, now: None)
    assert [i.key for i in out.waiting] == [key] and not _results(out)
    out.retry_waiting(due + 0.01)  # held tasks offered again: still held, not dropped
    assert [i.key for i in out.waiting] == [key] and not _results(out)
    assert out.counters["taken_back"] == 0


def test_mlci_answer_kept_is_the_answer_an_escalating_level_would_have_given():
    """MLCI's ESCALATE carries the level's answer (the ensemble so far) and ``answer_kept``
    returns it with this level's ``level``, counted in ``mlci_taken_back``."""
    pol = MlciPolicy({}, {}, seed=0)
    pol.level = 1
    up = HeadAction(ESCALATE, cls=4, confidence=0.5, fields={"level": 2, "ens": [0.1] * 10,
                                                             "ens_w": 0.5})
    ans = pol.answer_kept(up)
    assert (ans.kind, ans.cls, ans.confidence, ans.fields) == (ANSWER, 4, 0.5, {"level": 1})
    assert pol.snapshot()["mlci_taken_back"] == 1
