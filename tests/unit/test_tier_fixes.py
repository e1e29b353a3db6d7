"""Tiered policies on a node (docs/dimee-mlci.md): an MLCI escalation's TASK ``level`` names
the level the task goes to, also when a level in between is down; DIMEE counts a task sent
outside its own tier once, however often it is routed (re-issues, re-routes)."""

from __future__ import annotations

import numpy as np

from agent.node.book import ReplaySet
from agent.policies.api import ESCALATE, HeadInfo, NodeView, TaskInfo
from agent.policies.dimee.agent import DimeePolicy
from agent.policies.mlci.agent import MlciPolicy
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR, REPLAY_PATH
from engines.exit_profile import load_exit_profile

BUNDLE = load_bundle(DEMO_BUNDLE_DIR)
PROFILE = load_exit_profile(BUNDLE.exit_profile_path)
BUNDLE_FLOPS = tuple(float(s.flops) for s in BUNDLE.stages)


class _Cfg:
    heartbeat_interval_s, neighbour_timeout_rounds = 0.25, 4
    neighbour_silence_s = heartbeat_interval_s * neighbour_timeout_rounds  # NodeConfig's


def _end_view(alive):
    return NodeView("end", "worker", 1, 4, BUNDLE_FLOPS, (3136.0,) * 4, (1, 2, 3),
                    ("edge", "cloud"), (), {}, exit_profile=PROFILE, last_stage=1,
                    alive=set(alive), peer_stages={"edge": (1, 3), "cloud": (1, 4)})


def _escalate(pol, view, tid):
    """The end level's exit head with confidence 0.1 <= t: p(x) = 1, always offloaded."""
    flat = np.zeros(10, np.float32)
    return pol.on_head(HeadInfo(tid, 0, 1, 0.1, 0, flat, {}, {}, True), view)


def test_mlci_escalation_level_names_the_level_that_receives_the_task_when_edge_is_down():
    """MLCI: with the edge level gone, the end level escalates to the cloud, and the
    escalated TASK's ``level`` is the cloud's (2), the level ``choose_successor`` sends it to,
    not the edge's (1); with every level up it is the next level (1)."""
    view = _end_view({"cloud"})
    pol = MlciPolicy({}, {}, seed=0)
    pol.configure(_Cfg(), view)
    up = _escalate(pol, view, "a")
    assert up.kind == ESCALATE
    dest = pol.choose_successor(TaskInfo("a", 1, 3136), view)
    assert dest == "cloud" and pol.level_of(dest) == 2
    assert up.fields["level"] == pol.level_of(dest) == 2
    view.alive.add("edge")
    up = _escalate(pol, view, "b")
    dest = pol.choose_successor(TaskInfo("b", 1, 3136), view)
    assert dest == "edge" and up.fields["level"] == 1


def test_mlci_escalation_level_skips_a_refusing_level_as_routing_does():
    """MLCI: an edge alive but refusing (busy) is passed over by routing when the cloud takes
    tasks, and the TASK's ``level`` says so (2); with both refusing, the task waits for the
    next level up (1), which the field names."""
    view = _end_view({"edge", "cloud"})
    pol = MlciPolicy({}, {}, seed=0)
    pol.configure(_Cfg(), view)
    view.unavailable["edge"] = 1e18
    up = _escalate(pol, view, "a")
    assert pol.choose_successor(TaskInfo("a", 1, 3136), view) == "cloud"
    assert up.fields["level"] == 2
    view.unavailable["cloud"] = 1e18
    assert _escalate(pol, view, "b").fields["level"] == 1


def _dimee_source(alive):
    return NodeView("s", "source", 0, 4, BUNDLE_FLOPS, (3136.0,) * 4, (1, 2, 3),
                    ("mobile", "edge", "cloud"), (), {}, exit_profile=PROFILE, last_stage=0,
                    alive=set(alive),
                    peer_stages={"mobile": (1, 1), "edge": (1, 2), "cloud": (1, 4)})


def test_dimee_counts_a_task_falling_back_once_over_reissues_and_reroutes():
    """DIMEE: a task whose tier has no alive worker goes to another tier and is counted as one
    fallback, whether it is routed once, re-issued (attempt 1, routed again) or re-routed
    after a refusal (``exclude``); another task falling back counts one more; a task sent to
    its own tier counts none."""
    spec = BUNDLE.stage(1)
    replay = ReplaySet(REPLAY_PATH, spec.input_shape, spec.input_dtype, "test")
    view = _dimee_source({"mobile", "edge", "cloud"})
    pol = DimeePolicy({}, {"assign": "edge"}, seed=1)  # every task's tier: the edge
    pol.configure(_Cfg(), view)
    x = replay.x[1:2]
    pol.on_issue(TaskInfo("own", 1, x.nbytes, x=x, attempt=0), view)
    assert pol.choose_successor(TaskInfo("own", 1, x.nbytes), view) == "edge"
    assert pol.fallbacks == 0
    view.alive.discard("edge")  # the task's tier is gone
    pol.on_issue(TaskInfo("t", 1, x.nbytes, x=x, attempt=0), view)
    first = pol.choose_successor(TaskInfo("t", 1, x.nbytes), view)
    assert first == "cloud" and pol.fallbacks == 1
    pol.on_issue(TaskInfo("t", 1, x.nbytes, x=x, attempt=1), view)  # re-issued
    assert pol.choose_successor(TaskInfo("t", 1, x.nbytes), view) == "cloud"
    assert pol.choose_successor(TaskInfo("t", 1, x.nbytes), view, ("cloud",)) == "mobile"
    assert pol.fallbacks == 1 and pol.snapshot()["dimee_fallbacks"] == 1
    pol.on_issue(TaskInfo("u", 1, x.nbytes, x=x, attempt=0), view)
    pol.choose_successor(TaskInfo("u", 1, x.nbytes), view)
    assert pol.fallbacks == 2


def test_dimee_source_memory_of_fallen_back_tasks_is_bounded(monkeypatch):
    """DIMEE: the ids a source remembers to count each fallback once are at most
    ``MAX_TASKS_KEPT`` (the oldest go), so a long run's memory stays bounded."""
    from agent.policies.dimee import agent as dimee_agent

    monkeypatch.setattr(dimee_agent, "MAX_TASKS_KEPT", 3)
    spec = BUNDLE.stage(1)
    x = ReplaySet(REPLAY_PATH, spec.input_shape, spec.input_dtype, "test").x[1:2]
    view = _dimee_source({"cloud"})
    pol = DimeePolicy({}, {"assign": "edge"}, seed=1)
    pol.configure(_Cfg(), view)
    for i in range(10):
        pol.on_issue(TaskInfo("t%d" % i, 1, x.nbytes, x=x, attempt=0), view)
        assert pol.choose_successor(TaskInfo("t%d" % i, 1, x.nbytes), view) == "cloud"
    assert pol.fallbacks == 10 and len(pol._fell_back) == 3 and len(pol._tier_of) == 3
