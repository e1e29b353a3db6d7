"""A DIMEE source's saved pools (demo bundle's exit profile and replay set): resumed on the fit
they moved from, left on another one; workers save no pools and their state names the
thresholds they use."""

import json
import logging

import numpy as np

from agent.node.book import ReplaySet
from agent.policies.api import TaskInfo
from agent.policies.dimee.agent import DimeePolicy
from engines.demo import REPLAY_PATH
from tests.unit.test_tiered_agent import BUNDLE, _Cfg, _dimee_view


def _source(knobs):
    pol = DimeePolicy({1: 0.8, 2: 0.8, 3: 0.8}, knobs, seed=1)
    pol.configure(_Cfg(), _dimee_view())
    return pol


def _moved_state():
    """A default-knob source's state after 5 new tasks moved its pools (through JSON)."""
    pol = _source({})
    spec = BUNDLE.stage(1)
    replay = ReplaySet(REPLAY_PATH, spec.input_shape, spec.input_dtype, "test")
    for i, row in enumerate((1, 3, 5, 7, 9)):
        pol.on_issue(TaskInfo("t%d" % i, 1, 3136, x=replay.x[row:row + 1], attempt=0),
                     _dimee_view())
    return pol, json.loads(json.dumps(pol.snapshot()))


def test_dimee_source_resumes_pool_means_only_from_the_same_fit(caplog):
    """Pool means Ours-D moved are resumed by a source with the same fit; a source whose
    alpha* and pools changed (knob unit 0.05 -> 0.01) starts from its own fit and logs why,
    and so does one given a state saved without the fit's id."""
    pol, saved = _moved_state()
    same = _source({})
    same.restore(saved)
    assert np.array_equal(same.pools.mean, pol.pools.mean)
    other = _source({"unit": 0.01})
    fitted = other.pools
    assert other.model.alpha != pol.model.alpha
    with caplog.at_level(logging.INFO, logger="agent.policies.dimee.agent"):
        other.restore(saved)
    assert other.pools is fitted
    assert "not resumed" in caplog.text
    unmarked = dict(saved, dimee_pools={k: v for k, v in saved["dimee_pools"].items()
                                        if k != "fit"})
    again = _source({})
    again.restore(unmarked)
    assert np.array_equal(again.pools.mean, again.model.pools.mean)


def test_dimee_state_names_the_thresholds_used_and_workers_keep_no_pools():
    """The saved thresholds are the ones the node exits at (the edge: alpha* at stage 1; a
    source: none), not the config's 0.8s DIMEE never uses; a worker saves no pools or counts."""
    worker = DimeePolicy({1: 0.8, 2: 0.8, 3: 0.8}, {})
    worker.configure(_Cfg(), _dimee_view("worker"))
    state = worker.snapshot()
    assert state["thresholds"] == {"1": worker.model.alpha}
    assert not {"dimee_pools", "dimee_assigned", "dimee_fallbacks"} & set(state)
    src = _source({}).snapshot()
    assert src["thresholds"] == {} and "dimee_pools" in src
