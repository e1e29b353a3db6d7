"""MLCI on a head whose logits overflowed (a float16 engine writes +inf above 65504): the
level answers the class the engine saw with a finite confidence, as the threshold rule of
every other policy does (``engines.exit_profile.softmax_confidence``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.policies.api import ANSWER, HeadInfo, NodeView
from agent.policies.mlci import rules as R
from agent.policies.mlci.agent import MlciPolicy
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from engines.exit_profile import load_exit_profile, softmax_confidence

BUNDLE = load_bundle(DEMO_BUNDLE_DIR)
PROFILE = load_exit_profile(BUNDLE.exit_profile_path)
FLOPS = tuple(float(s.flops) for s in BUNDLE.stages)


class _Cfg:
    heartbeat_interval_s, neighbour_timeout_rounds = 0.25, 4
    neighbour_silence_s = heartbeat_interval_s * neighbour_timeout_rounds


def _overflowed(cls: int) -> np.ndarray:
    logits = np.linspace(-2.0, 2.0, 10).astype(np.float32)
    logits[cls] = np.inf  # float16 overflow, as a half-precision engine hands it over
    return logits


@pytest.mark.filterwarnings("ignore:invalid value encountered in subtract")  # inf - inf, then mended
def test_softmax_shares_the_probability_among_the_classes_at_plus_inf():
    """Rule: MLCI's softmax (eq. 5, tempered eq. 6) of a row with +inf logits gives those
    classes equal shares and the others 0, as the engines' confidence does; finite rows are
    unchanged and every row sums to 1."""
    rows = np.array([[1.0, 2.0, 3.0, 0.0], [np.inf, 0.0, np.inf, 5.0], [0.0, 0.0, 0.0, 0.0]])
    got = R.softmax(rows)
    assert np.isfinite(got).all() and np.allclose(got.sum(axis=1), 1.0)
    assert got[1].tolist() == [0.5, 0.0, 0.5, 0.0]
    z = np.exp(rows[0] - 3.0)
    assert np.allclose(got[0], z / z.sum()) and np.allclose(got[2], 0.25)
    assert R.tempered_confidence(rows[1], 2.5) == 0.5
    conf, _ = softmax_confidence(rows[1:2])
    assert float(conf[0]) == R.tempered_confidence(rows[1], 1.0)


def test_a_level_answers_an_overflowed_head_with_its_class_not_class_0_and_nan():
    """Rule: the top level and a lower level that keeps the task both answer a head with a
    +inf logit with that class and confidence 1 (before, inf - inf made every probability
    NaN: class 0 with confidence NaN, which the worker rejects as bad_output)."""
    cloud = NodeView("cloud", "worker", 1, 4, FLOPS, (3136.0,) * 4, (1, 2, 3), (), (), {},
                     exit_profile=PROFILE, last_stage=4)
    top = MlciPolicy({}, {}, seed=0)
    top.configure(_Cfg(), cloud)
    ans = top.on_head(HeadInfo("t", 0, 4, 1.0, 7, _overflowed(7), {}, {}, True), cloud)
    assert ans.kind == ANSWER and ans.cls == 7 and ans.confidence == 1.0

    edge = NodeView("edge", "worker", 1, 4, FLOPS, (3136.0,) * 4, (1, 2, 3), ("cloud",), (),
                    {}, alive={"cloud"}, exit_profile=PROFILE, last_stage=1,
                    peer_stages={"cloud": (1, 4)})
    low = MlciPolicy({}, {}, seed=0)
    low.configure(_Cfg(), edge)
    assert not low.top
    for i in range(20):  # a saturated head: the offload draw (eqs. 7-8) keeps it here
        ans = low.on_head(HeadInfo("u%d" % i, 0, 1, 1.0, 3, _overflowed(3), {}, {}, True), edge)
        assert ans.kind == ANSWER and ans.cls == 3 and math.isfinite(ans.confidence)
