"""The agent extensions DIMEE and MLCI run on (docs/dimee-mlci.md, A1-A6): the per-head hook,
terminal workers, the raw input an escalation sends, head logits, replay rows, the optional
wire fields, the topology's terminal field, and the DIMEE/MLCI adapters' own state."""

from __future__ import annotations

import json
import logging
import random
import select

import numpy as np
import pytest
import zmq

from agent.config.node import ConfigError, parse_config
from agent.net.transport import Transport
from agent.node.book import ReplaySet
from agent.node.build import build_view
from agent.node.capacity import Capacity, CapacityReport
from agent.node.head_logits import LogitsInferenceThread
from agent.node.outbox import Outbox
from agent.node.steps import Step, next_step
from agent.node.worker import WorkerSide
from agent.policies import api
from agent.policies.api import (ANSWER, CONTINUE, ESCALATE, AgentPolicy, HeadAction, HeadInfo,
                                NodeView, TaskInfo, first_group)
from agent.policies.dimee import rules as DR
from agent.policies.dimee.agent import DimeePolicy
from agent.policies.splits import test_rows
from agent.protocol import wire
from agent.protocol.wire import Kind, WireError
from agent.testbed.topology import TopologyError, parse_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR, REPLAY_PATH
from engines.exit_profile import load_exit_profile
from engines.loader import load_engine
from tests.unit.endpoints import loopback_endpoints

EP = loopback_endpoints((5541, 5542, 5551, 5552))  # free ports, labelled by the old fixed ones

BUNDLE = load_bundle(DEMO_BUNDLE_DIR)
PROFILE = load_exit_profile(BUNDLE.exit_profile_path)


def _task(**over):
    f = {"id": "t1", "source": "s1", "stage": 1, "attempt": 0, "created": 1.0, "hops": 0,
         "resends": 0, "token": "abc", "ttl_s": 30.0}
    f.update(over)
    return f


# -- wire -------------------------------------------------------------------------------------

def test_mlci_wire_fields_round_trip_and_bad_ones_are_bad_field():
    """TASK level/ens/ens_w and RESULT level decode when present; an ens item that is not a
    finite number, or a negative level, is a WireError('bad_field'); absent means absent."""
    x = np.zeros((1, 1, 28, 28), np.float32)
    m = wire.decode(wire.encode(Kind.TASK, "a", _task(level=2, ens=[0.25, 1], ens_w=0.9), [x]))
    assert m.fields["level"] == 2 and m.fields["ens"] == [0.25, 1.0] and m.fields["ens_w"] == 0.9
    assert "level" not in wire.decode(wire.encode(Kind.TASK, "a", _task(), [x])).fields
    for bad in ({"ens": [0.1, "x"]}, {"ens": [float("nan")]}, {"level": -1}, {"ens_w": "1"}):
        with pytest.raises(WireError) as e:
            wire.decode(wire.encode(Kind.TASK, "a", _task(**bad), [x]))
        assert e.value.reason == "bad_field"
    res = {"id": "t", "attempt": 0, "source": "s", "exit_stage": 1, "cls": 1, "confidence": 0.5,
           "worker": "w", "hops": 1, "resends": 0, "created": 1.0, "level": 1}
    assert wire.decode(wire.encode(Kind.RESULT, "w", res)).fields["level"] == 1


# -- the exit decision and the hook ------------------------------------------------------------

def test_next_step_answer_replaces_the_threshold_but_not_the_last_stage():
    """``answer`` (the hook's decision) overrides the threshold comparison; the final stage
    (a terminal worker's own last stage) answers whatever it says."""
    keep = lambda: True  # noqa: E731
    assert next_step(1, 4, 0.1, 0.9, True, False, keep, answer=True) is Step.EXIT
    assert next_step(1, 4, 0.99, 0.5, True, False, keep, answer=False) is Step.FORWARD
    assert next_step(2, 2, 0.1, None, True, True, keep, answer=False) is Step.EXIT
    assert next_step(1, 4, 0.99, 0.5, True, False, keep) is Step.EXIT  # no hook: threshold


def test_base_on_head_is_the_threshold_rule():
    """The base ``on_head`` answers exactly when the old rule exits: the last head, or
    confidence >= the stage's threshold (no threshold: never early)."""
    pol = AgentPolicy({1: 0.8, 2: 0.5}, {})
    view = NodeView("w", "worker", 1, 4, (1.0,) * 4, (1.0,) * 4, (1, 2, 3), (), (), {})
    for stage, conf, last, want in ((1, 0.8, False, ANSWER), (1, 0.79, False, CONTINUE),
                                    (2, 0.5, False, ANSWER), (3, 0.99, False, CONTINUE),
                                    (3, 0.1, True, ANSWER)):
        head = HeadInfo("t", 0, stage, conf, 1, None, {}, {}, last)
        assert pol.on_head(head, view).kind == want, (stage, conf, last)


def test_first_group_prefers_untried_members_then_any_alive():
    """Routing by groups: the first group with an alive untried member; when every alive one
    was tried, the first group with an alive member; none alive: (-1, [])."""
    groups = [["a"], ["b", "c"]]
    assert first_group(groups, ["a", "b"]) == (0, ["a"])
    assert first_group(groups, ["a", "b"], exclude=["a"]) == (1, ["b"])
    assert first_group(groups, ["a"], exclude=["a"]) == (0, ["a"])
    assert first_group(groups, []) == (-1, [])


class _Escalate(AgentPolicy):
    """Continue at stage 1, then escalate with MLCI's fields (a worker holding 1..2)."""

    def on_head(self, head, view):
        head.local["seen"] = head.local.get("seen", 0) + 1
        if head.stage == 1:
            return HeadAction(CONTINUE)
        self.logits, self.seen = head.logits, head.local["seen"]
        return HeadAction(ESCALATE, fields={"level": 1, "ens": [0.1] * 10, "ens_w": 0.5})

    def choose_successor(self, task, view, exclude=()):
        return None  # keep it waiting, to be inspected


@pytest.fixture
def two_stage_worker(tmp_path):
    raw = {"node_id": "w1", "role": "worker", "stage": 1, "last_stage": 2, "terminal": True,
           "bundle": DEMO_BUNDLE_DIR, "state_dir": str(tmp_path),
           "control_bind": EP[5551], "data_bind": EP[5552],
           "peers": [{"id": "s1", "stage": 0, "control_address": EP[5541],
                      "data_address": EP[5542]}]}
    cfg = parse_config(raw)
    specs = {h: BUNDLE.stage(h) for h in (1, 2)}
    engines = {h: load_engine(s, backend="onnxruntime") for h, s in specs.items()}
    runner = LogitsInferenceThread(engines, {h: s.flops for h, s in specs.items()})
    ctx = zmq.Context()
    transport = Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    view = build_view(cfg, BUNDLE, None)
    policy = _Escalate({}, {})
    capacity = Capacity(CapacityReport(1e8, 0.01, 1e8, "timed"))
    out = Outbox(cfg, transport, policy, view, capacity, lambda: runner.queued)
    side = WorkerSide(cfg, out, policy, specs, runner, capacity)
    runner.start()
    yield side, out, policy, view
    runner.stop()
    for e in engines.values():
        e.close()
    transport.close()
    ctx.term()


def _deliver(side, msg):
    side.on_data(b"id", msg)
    while side.in_flight():
        ready, _, _ = select.select(side.wake_fds(), [], [], 30.0)
        assert ready, "inference thread gave no result within 30 s"
        side.on_fd(ready[0])


def test_escalate_sends_the_raw_input_as_a_stage_1_task_with_token_and_deadline(
        two_stage_worker):
    """A4/A2: the stage-1 input is kept through the local stage 2 (and the per-task ``local``
    dict with it); ESCALATE sends that input as a stage-1 TASK with the action's fields, the
    task's token and its deadline; the hook saw the head's (C,) logits (A3)."""
    side, out, policy, view = two_stage_worker
    x = np.random.default_rng(1).random((1, 1, 28, 28)).astype(np.float32)
    msg = wire.decode(wire.encode(Kind.TASK, "s1", _task(), [x]))
    _deliver(side, msg)
    assert out.counters["escalated"] == 1 and out.counters["kept_local"] == 1
    item = out.waiting[0]
    assert item.kind == Kind.TASK and item.fields["stage"] == 1 and item.fields["hops"] == 2
    assert np.array_equal(item.tensor, x) and item.fields["token"] == "abc"
    assert item.fields["level"] == 1 and len(item.fields["ens"]) == 10
    assert item.expires > 0 and not any(k.startswith("_") for k in item.fields)
    assert policy.seen == 2 and policy.logits.shape == (10,)
    wire.encode(item.kind, "w1", dict(item.fields, resends=0), [item.tensor])  # sendable


def test_a_tier_refuses_a_task_past_its_first_stage_before_taking_custody(two_stage_worker):
    """Rule: a tier (a terminal worker) takes tasks at its first stage only, the raw input an
    escalation sends on; a stage-2 TASK, which it would have ACKed and then dropped at its
    escalation (no raw input), is refused at once as wrong_stage: not ACKed, nothing run."""
    side, out, policy, view = two_stage_worker
    feats = np.zeros(BUNDLE.stage(2).input_shape, np.float32)
    side.on_data(b"id", wire.decode(wire.encode(Kind.TASK, "s1", _task(stage=2), [feats])))
    assert out.counters["drop_wrong_stage"] == 1 and not side.in_flight()
    assert getattr(policy, "seen", 0) == 0 and not out.items and not out.waiting
    assert out.counters["escalated"] == 0 and out.counters["drop_no_input"] == 0


def test_a_policy_answer_with_a_non_finite_confidence_is_dropped_not_sent(two_stage_worker,
                                                                          caplog):
    """A policy's ANSWER whose confidence is not finite is dropped (``drop_bad_output``): a
    RESULT carrying it would fail the wire check at the source, with every result batched
    with it; a finite answer is sent. The drop is logged (once, naming the task), as every
    refused input is: it was only counted, so a task lost to it had no why in the log."""
    caplog.set_level(logging.WARNING)
    side, out, policy, view = two_stage_worker
    x = np.zeros((1, 1, 28, 28), np.float32)
    for conf in (float("inf"), float("nan"), 0.75):
        policy.on_head = lambda head, view, c=conf: HeadAction(ANSWER, cls=3, confidence=c)
        _deliver(side, wire.decode(wire.encode(Kind.TASK, "s1", _task(), [x])))
        side.seen.clear()  # the same task id again
    assert out.counters["drop_bad_output"] == 2
    assert [i.fields["confidence"] for i in out.items.values()] == [0.75]
    lines = [r.getMessage() for r in caplog.records if "bad_output" in r.getMessage()
             or "confidence for task" in r.getMessage()]
    assert len(lines) == 1 and "the policy's confidence for task" in lines[0], lines


def test_a_terminal_worker_answers_at_its_last_stage(tmp_path):
    """A1: a terminal worker's view reports no unreachable stage (it sends nothing on), and a
    terminal flag on a config round-trips; the base rule then answers at its last stage."""
    raw = {"node_id": "w1", "role": "worker", "stage": 1, "last_stage": 2, "terminal": True,
           "bundle": DEMO_BUNDLE_DIR, "state_dir": str(tmp_path),
           "control_bind": EP[5551], "data_bind": EP[5552],
           "replay_rows": "test",
           "peers": [{"id": "s1", "stage": 0, "control_address": EP[5541],
                      "data_address": EP[5542]}]}
    cfg = parse_config(raw)
    assert cfg.terminal and cfg.replay_rows == "test"
    view = build_view(cfg, BUNDLE, None)
    assert view.terminal and api.first_unreachable_stage(view) == 0
    with pytest.raises(ConfigError, match="replay_rows"):
        parse_config(dict(raw, replay_rows="odd"))


# -- source side -------------------------------------------------------------------------------

def test_replay_rows_test_draws_odd_rows_and_all_keeps_the_old_draws():
    """A source's ``replay_rows = "test"`` draws only odd rows; ``all`` draws exactly as before
    (same RNG calls, the row is the index)."""
    spec = BUNDLE.stage(1)
    test = ReplaySet(REPLAY_PATH, spec.input_shape, spec.input_dtype, "test")
    rows = {test.sample_row(random.Random(s))[2] for s in range(200)}
    assert rows <= set(test_rows(len(test.x)).tolist()) and len(rows) > 100
    every = ReplaySet(REPLAY_PATH, spec.input_shape, spec.input_dtype)
    a, b = random.Random(7), random.Random(7)
    x, y, row = every.sample_row(a)
    assert row == b.randrange(len(every.x)) and np.array_equal(x, every.x[row:row + 1])


def _dimee_view(role="source"):
    return NodeView("mob" if role == "source" else "edge", role, 0 if role == "source" else 1,
                    4, BUNDLE_FLOPS, (3136.0,) * 4, (1, 2, 3), ("mobile", "edge", "cloud"), (),
                    {}, exit_profile=PROFILE, last_stage=0 if role == "source" else 2,
                    alive={"mobile", "edge", "cloud"},
                    peer_stages={"mobile": (1, 1), "edge": (1, 2), "cloud": (1, 4)})


BUNDLE_FLOPS = tuple(float(s.flops) for s in BUNDLE.stages)


class _Cfg:
    heartbeat_interval_s, neighbour_timeout_rounds = 0.25, 4
    neighbour_silence_s = heartbeat_interval_s * neighbour_timeout_rounds  # NodeConfig's


def test_dimee_source_routes_by_nearest_pool_and_restores_its_adaptive_means():
    """D-11: a DIMEE source assigns each new task the tier of its nearest pool mean (the
    profile's embedding of its row), moves that mean once per task (not on a re-issue), and a
    restarted source resumes the means and counts it saved (snapshot -> JSON -> restore)."""
    pol = DimeePolicy({}, {}, seed=1)
    view = _dimee_view()
    pol.configure(_Cfg(), view)
    fitted = pol.pools
    spec = BUNDLE.stage(1)
    replay = ReplaySet(REPLAY_PATH, spec.input_shape, spec.input_dtype, "test")
    for i, row in enumerate((1, 3, 5, 7, 9)):
        x = replay.x[row:row + 1]
        want = DR.nearest_tier(pol.pools, PROFILE.embedding[row])
        pol.on_issue(TaskInfo("t%d" % i, 1, x.nbytes, x=x, attempt=0), view)
        assert pol.choose_successor(TaskInfo("t%d" % i, 1, x.nbytes), view) == DR.TIERS[want]
    before = pol.pools
    pol.on_issue(TaskInfo("t0", 1, 3136, x=replay.x[1:2], attempt=1), view)  # a re-issue
    assert pol.pools is before and int(before.count.sum()) == int(fitted.count.sum()) + 5
    saved = json.loads(json.dumps(pol.snapshot()))
    again = DimeePolicy({}, {}, seed=1)
    again.configure(_Cfg(), view)
    assert np.array_equal(again.pools.mean, fitted.mean)
    again.restore(saved)
    assert np.array_equal(again.pools.mean, before.mean)
    assert np.array_equal(again.pools.count, before.count)
    frozen = DimeePolicy({}, {}, seed=1, name="dimee-f")
    frozen.configure(_Cfg(), view)
    frozen.restore(saved)  # Ours-F never takes adaptive means
    assert np.array_equal(frozen.pools.mean, fitted.mean)


def test_dimee_tier_worker_thresholds_and_stage_check():
    """A DIMEE edge worker (stages 1..n) exits at alpha* below its last stage; a tier worker
    holding the wrong prefix is refused at start-up with the knob named."""
    pol = DimeePolicy({}, {})
    pol.configure(_Cfg(), _dimee_view("worker"))
    assert pol.thresholds() == {1: pol.model.alpha}
    bad = _dimee_view("worker")
    bad.last_stage = 3
    with pytest.raises(DR.DimeeParamsError, match="policy_knobs.tiers"):
        DimeePolicy({}, {}).configure(_Cfg(), bad)


# -- topology ----------------------------------------------------------------------------------

def _topology(**worker):
    w = dict({"id": "mobile", "stage": 1, "terminal": True}, **worker)
    return {"sources": [{"id": "s", "share": 1.0}],
            "workers": [w, {"id": "cloud", "stage": 1, "last_stage": 4}],
            "links": [{"from": "s", "to": "mobile"}, {"from": "s", "to": "cloud"}]}


def test_topology_terminal_worker_needs_no_link_and_may_send_none():
    """A terminal topology worker needs no link on to a later stage; a link out of it is an
    error naming it; ``rates`` is the topology's default for the testbed."""
    topo = parse_topology(dict(_topology(), rates="5,10"))
    assert [w.terminal for w in topo.workers] == [True, False] and topo.rates == "5,10"
    obj = _topology()
    obj["links"].append({"from": "mobile", "to": "cloud"})
    with pytest.raises(TopologyError, match="terminal"):
        parse_topology(obj)
    obj = _topology(terminal=False)
    with pytest.raises(TopologyError, match="no link"):
        parse_topology(obj)


def test_shipped_dimee_and_mlci_topologies_default_to_tasks_per_second_on_test_rows():
    """The shipped ``dimee`` and ``mlci`` topologies load, set their own default rates in
    tasks/s (their tasks do not visit every stage, so ``N%`` of the capacity would not fit),
    draw test rows, and hold the spec's prefixes; DIMEE's mobile and edge are terminal."""
    from agent.testbed.topology import load_topology

    dimee, mlci = load_topology("dimee"), load_topology("mlci")
    for topo in (dimee, mlci):
        assert topo.rates == "5,10" and topo.agent["replay_rows"] == "test"
    assert {w.id: (w.stages, w.terminal) for w in dimee.workers} == {
        "mobile": ((1, 1), True), "edge": ((1, 2), True), "cloud": ((1, 4), False)}
    assert {w.id: w.stages for w in mlci.workers} == {"end": (1, 1), "edge": (1, 3),
                                                      "cloud": (1, 4)}


def test_mlci_level_continues_by_patience_then_escalates_or_the_top_answers_the_ensemble():
    """MLCI on a level worker: CONTINUE while the patience counter is below p; at the model's
    exit a confidence at or below t is always offloaded (p(x) = 1) with the running ensemble;
    the top level answers the ensemble's class with RESULT ``level``; a malformed incoming
    ensemble is counted and the level starts afresh."""
    from agent.policies.mlci.agent import MlciPolicy

    edge = NodeView("edge", "worker", 1, 4, BUNDLE_FLOPS, (3136.0,) * 4, (1, 2, 3), ("cloud",),
                    (), {}, exit_profile=PROFILE, last_stage=3, alive={"cloud"},
                    peer_stages={"cloud": (1, 4)})
    pol = MlciPolicy({}, {}, seed=0)
    pol.configure(_Cfg(), edge)
    flat = np.zeros(10, np.float32)  # softmax 0.1 each: conf 0.1 <= t
    local: dict = {}
    first = pol.on_head(HeadInfo("t", 0, 1, 0.1, 0, flat, {}, local, False), edge)
    assert first.kind == CONTINUE  # one head seen: no difference to compare yet
    assert pol.on_head(HeadInfo("t", 0, 2, 0.5, 0, flat, {}, local, False), edge).kind == CONTINUE
    up = pol.on_head(HeadInfo("t", 0, 3, 0.5, 0, flat, {}, local, False), edge)  # diff 0 < tau
    assert up.kind == ESCALATE and up.fields["level"] == 2
    assert np.allclose(up.fields["ens"], pol.weight * 0.1) and up.fields["ens_w"] == pol.weight
    cloud = NodeView("cloud", "worker", 1, 4, BUNDLE_FLOPS, (3136.0,) * 4, (1, 2, 3), (), (),
                     {}, exit_profile=PROFILE, last_stage=4)
    top = MlciPolicy({}, {}, seed=0)
    top.configure(_Cfg(), cloud)
    logits = np.eye(10, dtype=np.float32)[3] * 5
    ens = [0.0] * 9 + [1.0]  # the lower levels all said class 9, with weights adding up to 1
    ans = top.on_head(HeadInfo("t", 0, 4, 0.9, 3, logits, {"ens": ens, "ens_w": 1.0}, {}, True),
                      cloud)
    assert ans.kind == ANSWER and ans.fields == {"level": 2} and ans.cls == 9
    sent = top.on_head(HeadInfo("v", 0, 4, 0.9, 3, logits, dict(up.fields), {}, True), cloud)
    assert sent.kind == ANSWER and top.bad_ensemble == 0  # the edge's own ensemble fits
    bad = top.on_head(HeadInfo("u", 0, 4, 0.9, 3, logits, {"ens": [1.0], "ens_w": 1.0}, {},
                               True), cloud)
    assert bad.cls == 3 and top.bad_ensemble == 1


@pytest.mark.parametrize("ens,ens_w", [
    ([1.7e308] * 10, 1e-300), ([5.0] * 10, 1e-300), ([0.5] * 10, 5.0), ([0.0] * 9 + [5.0], 1.0),
    ([-0.35] + [0.15] * 9, 1.0), ([0.1] * 10, 1e9)], ids=[
    "overflow", "above-weight", "sum-below-weight", "sum-above-weight", "negative",
    "weight-above-lower-levels"])
def test_mlci_top_refuses_an_ensemble_lower_levels_cannot_have_sent(ens, ens_w):
    """MLCI's top level takes an escalated TASK's ensemble only if lower levels can have sent
    it (eq. 11: a weighted sum of probability vectors, weights at most the lower levels'
    together); anything else is counted and the level answers afresh, with a confidence in
    [0, 1] (a forged one answered inf, which failed the source's whole RESULTS batch)."""
    from agent.policies.mlci.agent import MlciPolicy

    cloud = NodeView("cloud", "worker", 1, 4, BUNDLE_FLOPS, (3136.0,) * 4, (1, 2, 3), (), (),
                     {}, exit_profile=PROFILE, last_stage=4)
    top = MlciPolicy({}, {}, seed=0)
    top.configure(_Cfg(), cloud)
    logits = np.eye(10, dtype=np.float32)[3] * 5
    ans = top.on_head(HeadInfo("t", 0, 4, 0.9, 3, logits, {"ens": ens, "ens_w": ens_w}, {},
                               True), cloud)
    assert ans.kind == ANSWER and ans.cls == 3 and 0.0 <= ans.confidence <= 1.0
    assert top.bad_ensemble == 1


def test_mlci_level_answers_what_it_cannot_escalate_and_never_reports_no_route():
    """MLCI with every higher level down: an offload draw at the level's exit is answered here
    with the ensemble so far (counted in ``mlci_kept``), not escalated to wait for a deadline,
    and the level's node has no "no route" for the missing stage (it would reject every new
    task at the sources while the cloud is down); with the cloud back it escalates again."""
    from agent.policies.api import first_unreachable_stage
    from agent.policies.mlci.agent import MlciPolicy

    edge = NodeView("edge", "worker", 1, 4, BUNDLE_FLOPS, (3136.0,) * 4, (1, 2, 3), ("cloud",),
                    (), {}, exit_profile=PROFILE, last_stage=3, peer_stages={"cloud": (1, 4)})
    pol = MlciPolicy({}, {}, seed=0)
    pol.configure(_Cfg(), edge)
    assert first_unreachable_stage(edge) == 0  # the cloud is not alive: still a route
    flat = np.zeros(10, np.float32)  # conf 0.1 <= t: p(x) = 1, always drawn to offload

    def exit_head(tid):
        local = {"conf": 0.1, "cnt": 5}  # patience over: the model's exit
        return pol.on_head(HeadInfo(tid, 0, 3, 0.1, 0, flat, {}, local, False), edge)

    kept = exit_head("a")
    assert kept.kind == ANSWER and kept.fields == {"level": 1} and pol.kept == 1
    assert pol.snapshot()["mlci_kept"] == 1 and pol.escalated == 0
    edge.alive.add("cloud")
    assert exit_head("b").kind == ESCALATE and pol.escalated == 1
    edge.unavailable["cloud"] = 1e18  # alive but refusing (busy): still escalated, not kept
    assert exit_head("c").kind == ESCALATE and pol.escalated == 2 and pol.kept == 1
