"""The composition root refuses, with one line, a worker config the bundle or policy can't serve."""

from __future__ import annotations

import pytest

from agent.config.node import parse_config
from agent.errors import UsageError
from agent.node.build import check_config
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR


SOURCE = {"id": "s1", "stage": 0, "control_address": "tcp://127.0.0.1:5541",
          "data_address": "tcp://127.0.0.1:5542"}


def _worker(tmp_path, **over):
    raw = {"node_id": "w1", "role": "worker", "stage": 1, "bundle": DEMO_BUNDLE_DIR,
           "state_dir": str(tmp_path), "control_bind": "tcp://127.0.0.1:5551",
           "data_bind": "tcp://127.0.0.1:5552",
           "peers": [SOURCE, {"id": "w3", "stage": 3, "control_address": "tcp://127.0.0.1:5561",
                              "data_address": "tcp://127.0.0.1:5562"}]}
    raw.update(over)
    return parse_config(raw)


def test_a_policy_that_needs_one_stage_per_worker_refuses_a_multi_stage_worker(tmp_path):
    """The registry row says why (DTO-EE's model has one stage per worker); another policy
    takes the same worker."""
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    with pytest.raises(UsageError, match=r"^last_stage: policy dtoee: DTO-EE models one stage "
                                         r"per worker; give this worker one stage"):
        check_config(_worker(tmp_path, last_stage=2, policy="dtoee"), bundle)
    check_config(_worker(tmp_path, last_stage=2, policy="mdi-exit"), bundle)


def test_a_worker_without_a_next_stage_peer_is_refused(tmp_path):
    """A stage-1 worker of a 4-stage bundle needs a stage-2 peer."""
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    with pytest.raises(UsageError, match=r"^peers: a stage-1 worker needs at least one stage-2"):
        check_config(_worker(tmp_path, peers=[SOURCE]), bundle)
