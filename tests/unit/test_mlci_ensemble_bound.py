"""MLCI on a node: the bound on an escalated task's ensemble weight (``rules.lower_weight_bound``)
is what the lower levels can really send, also when a lower level's head is more accurate than a
higher one's (overthinking), and an ensemble above it is still refused."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from agent.policies.api import ANSWER, CONTINUE, ESCALATE, HeadInfo, NodeView
from agent.policies.mlci import replay as P
from agent.policies.mlci import rules as R
from agent.policies.mlci.agent import MlciPolicy
from agent.policies.splits import test_rows
from agent.scenario.paper import synthetic_exit_profile

# head accuracies fall with depth: the end model (head 1) is the most accurate of all
FALLING = synthetic_exit_profile([0.90, 0.85, 0.80, 0.75], [1, 2, 3, 4], 4, 10, 2000,
                                 v2_fields=True)
# (node id, last stage, next level's id): end 1..1, edge 1..3, cloud 1..4
LEVELS = (("end", 1, "edge"), ("edge", 3, "cloud"), ("cloud", 4, None))
PREFIXES = tuple(last for _, last, _ in LEVELS)


class _Cfg:
    heartbeat_interval_s, neighbour_timeout_rounds = 0.25, 4
    neighbour_silence_s = heartbeat_interval_s * neighbour_timeout_rounds  # NodeConfig's


def _level(index, **knobs):
    """Level ``index``'s worker on the falling profile: its configured policy and its view."""
    node_id, last, up = LEVELS[index]
    succ = () if up is None else (up,)
    stages = {up: (1, LEVELS[index + 1][1])} if up else {}
    view = NodeView(node_id, "worker", 1, 4, (1.0,) * 4, (3136.0,) * 4, (1, 2, 3), succ, (), {},
                    exit_profile=FALLING, last_stage=last, alive=set(succ), peer_stages=stages)
    pol = MlciPolicy({}, knobs, seed=0)
    pol.configure(_Cfg(), view)
    return pol, view


def _run(pol, view, row, fields):
    """The row's heads on this level's stages until the level escalates or answers."""
    local: dict = {}
    for col, stage in enumerate(FALLING.exit_stages):
        logits = FALLING.logits[row, col]
        act = pol.on_head(HeadInfo("r%d" % row, 0, stage, float(FALLING.confidence[row, col]),
                                   int(np.argmax(logits)), logits, fields, local,
                                   stage == view.last_stage), view)
        if act.kind != CONTINUE:
            return act
    raise AssertionError("the level's last head always answers or escalates")


def _plan_ensemble(model, params, row):
    """The plan's answer for a row every level runs (eqs. 11-12 with ``replay.fit``'s weights)
    and whether the levels below the top offload it for sure (tempered confidence <= t)."""
    vec, wsum, sure = None, 0.0, True
    for ell, cols in enumerate(model.cols):
        at = cols[R.model_exit(FALLING.confidence[row, list(cols)], params.tau, params.patience)]
        logits = FALLING.logits[row, at]
        vec, wsum = R.ensemble_add(vec, wsum, float(model.weights[ell]), R.softmax(logits))
        if ell < len(model.cols) - 1:
            sure = sure and R.tempered_confidence(
                logits, float(model.temperatures[at])) <= params.confidence_threshold
    _, cls, conf = R.ensemble_answer(vec, wsum)
    return cls, conf, int(np.argmax(FALLING.logits[row, at])), sure


def test_overthinking_ensemble_climbs_every_level_and_is_answered_as_the_plan_answers():
    """Rule (eqs. 11-12): with head accuracies falling with depth and no ``prefixes`` knob, a
    task the end and the edge both offload reaches the cloud with the ensemble of every level
    that ran: no level counts it a bad ensemble, and the cloud answers the class and confidence
    the plan's fitted model gives (here a class other than the cloud head's own)."""
    params = R.MlciParams()
    model = P.fit(FALLING, params, PREFIXES)
    assert model.weights[0] > model.weights[1] > model.weights[2]  # overthinking
    # a test row both lower levels offload, answered by the ensemble other than the top head
    row, (want_cls, want_conf, own_cls, _) = next(
        (r, plan) for r, plan in ((r, _plan_ensemble(model, params, r))
                                  for r in test_rows(FALLING.num_samples))
        if plan[3] and plan[0] != plan[2])
    walked = P.walk(FALLING, model, params, P.MlciSetting((1.0,) * 4, (1.0,) * 3, (1.0,) * 2,
                                                          1.0), row, np.random.default_rng(0))
    assert walked[0] == 2 and walked[1] == (want_cls == FALLING.label[row])
    fields: dict = {}
    for index in range(3):
        pol, view = _level(index)
        assert pol.weight == pytest.approx(model.weights[index])
        act = _run(pol, view, row, fields)
        assert pol.bad_ensemble == 0 and pol.snapshot()["mlci_bad_ensemble"] == 0
        if index < 2:
            assert act.kind == ESCALATE and act.fields["level"] == index + 1
            assert act.fields["ens_w"] == pytest.approx(sum(model.weights[:index + 1]))
            fields = dict(act.fields)
    assert act.kind == ANSWER and act.fields == {"level": 2}
    assert act.cls == want_cls != own_cls and act.confidence == pytest.approx(want_conf)


def test_without_prefixes_the_bound_covers_every_prefix_the_lower_levels_can_hold():
    """Rule: a node that does not know the other levels' prefixes bounds an incoming ``ens_w``
    by at least the lower levels' weights together for every choice of their prefixes (level
    times the best head's validation accuracy), the end model's weight included."""
    fixed_t = dataclasses.replace(R.MlciParams(), temperature=1.0)  # weights do not use T
    bounds = [_level(index)[0].below_w for index in range(3)]
    assert bounds[0] == 0.0
    worst = [0.0, 0.0, 0.0]
    for prefixes in itertools.product(FALLING.exit_stages, repeat=3):
        weights = P.fit(FALLING, fixed_t, prefixes).weights
        for index in range(3):
            worst[index] = max(worst[index], float(sum(weights[:index])))
    for index in range(3):
        assert worst[index] <= bounds[index] * (1.0 + 1e-12)
    assert bounds[1] == pytest.approx(worst[1]) and bounds[2] == pytest.approx(worst[2])


@pytest.mark.parametrize("knobs,bounds", [
    ({}, None),  # level x the best head's accuracy (computed below)
    ({"prefixes": list(PREFIXES)}, "fit"),  # the fitted weights of the given prefixes
    ({"weights": [0.2, 0.3, 0.5]}, (0.0, 0.2, 0.5)),  # the knob's own weights
], ids=["no-prefixes", "prefixes", "explicit-weights"])
def test_an_ensemble_weight_above_the_lower_levels_bound_is_still_refused(knobs, bounds):
    """Rule: a well-formed ensemble (a weighted sum of probability vectors) whose ``ens_w`` is
    at the lower levels' bound is taken; one above it, which no lower levels can have sent, is
    counted as ``mlci_bad_ensemble`` and the level answers afresh. The bound is sum(weights[:l])
    with explicit ``weights``, the fitted weights' with ``prefixes``, else l times the best
    head's validation accuracy."""
    model = P.fit(FALLING, R.MlciParams(), PREFIXES)
    if bounds is None:
        bounds = tuple(ell * float(model.head_accuracies.max()) for ell in range(3))
    elif bounds == "fit":
        bounds = tuple(float(sum(model.weights[:ell])) for ell in range(3))
    flat = np.zeros(10, np.float32)  # conf 0.1 <= t: below the top always offloaded
    for index in (1, 2):
        pol, view = _level(index, **knobs)
        assert pol.below_w == pytest.approx(bounds[index])
        taken, over = pol.below_w, pol.below_w + 0.01
        for ens_w, bad in ((taken, 0), (over, 1)):
            act = pol.on_head(HeadInfo("t", 0, view.last_stage, 0.1, 0, flat,
                                       {"ens": [0.0] * 9 + [ens_w], "ens_w": ens_w}, {}, True),
                              view)
            assert pol.bad_ensemble == bad and pol.snapshot()["mlci_bad_ensemble"] == bad
            kept = ens_w if bad == 0 else 0.0  # refused: this level starts the ensemble afresh
            if index == 2:  # the top answers: class 9 from the lower levels, else its own 0
                assert act.kind == ANSWER and act.cls == (9 if bad == 0 else 0)
            else:
                assert act.kind == ESCALATE
                assert act.fields["ens_w"] == pytest.approx(kept + pol.weight)


def test_lower_weight_bound_rule():
    """Rule (``rules.lower_weight_bound``): 0 at level 1; explicit weights: their first l;
    accuracy weights with every prefix given: the fitted weights' first l; else l times the
    best head's accuracy (a lower level may hold the most accurate head)."""
    fitted, heads = [0.9, 0.8, 0.75], [0.9, 0.85, 0.8, 0.75]
    plain = R.MlciParams()
    assert R.lower_weight_bound(plain, 0, fitted, heads) == 0.0
    assert R.lower_weight_bound(plain, 2, fitted, heads) == pytest.approx(1.8)
    given = dataclasses.replace(plain, prefixes=(1, 3, 4))
    assert R.lower_weight_bound(given, 2, fitted, heads) == pytest.approx(1.7)
    explicit = dataclasses.replace(given, weights=(0.2, 0.3, 0.5))
    assert R.lower_weight_bound(explicit, 1, fitted, heads) == pytest.approx(0.2)
    assert R.lower_weight_bound(explicit, 2, fitted, heads) == pytest.approx(0.5)


@pytest.mark.parametrize("half", ["ens", "ens_w"])
def test_an_escalation_with_only_half_an_ensemble_is_counted_bad(half):
    """Rule: an escalated task carrying ``ens`` without ``ens_w``, or ``ens_w`` without ``ens``,
    is counted as ``mlci_bad_ensemble`` and this level starts afresh (a task without ``ens``
    was taken as a new end-level task, its lower levels' share dropped without a count)."""
    flat = np.zeros(10, np.float32)
    pol, view = _level(2)
    fields = {"ens": [0.0] * 9 + [0.1], "ens_w": 0.1}
    del fields[half]
    act = pol.on_head(HeadInfo("t", 0, view.last_stage, 0.1, 0, flat, fields, {}, True), view)
    assert pol.bad_ensemble == 1 and act.kind == ANSWER and act.cls == 0
