"""Engine batching (``agent.node.batching``): waiting jobs of one stage run as one engine call,
with the outputs each would get alone, and no capacity sample from a share of a call.

The engines are the demo bundle's real onnxruntime stages (one intra-op thread); the stand-in
engines below replace one only where a test needs a failure or a fixed batch, and follow
``engines.engine.Engine``'s surface (``run(x) -> StageOutput``, ``stage``, TensorRT's
``max_batch``).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from agent.config.checks import ENGINE_BATCH_MAX
from agent.config.node import ConfigError, parse_config
from agent.node import inference, worker
from agent.node.batching import batch_limit, batch_limits, chunks
from agent.node.head_logits import LogitsInferenceThread
from agent.node.inference import InferenceThread, Job
from agent.node.jobs import WARM_RUNS
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from engines.engine import StageOutput
from engines.loader import load_engine


@pytest.fixture(scope="module")
def demo():
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    engines = {h: load_engine(bundle.stage(h), backend="onnxruntime", threads=1)
               for h in (1, 2, 3, 4)}
    yield bundle, engines
    for e in engines.values():
        e.close()


def _inputs(spec, n, seed=0):
    shape = (1,) + tuple(spec.input_shape[1:])
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(spec.input_dtype) for _ in range(n)]


def _thread(bundle, engines, batch_max):
    return InferenceThread(engines, {h: bundle.stage(h).flops for h in engines},
                           batch_max=batch_max)


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_a_batch_gives_each_job_what_it_would_get_alone(demo, stage):
    """Rule: eight jobs run as one call get, each, the features, confidence and class of eight
    single calls (within float rounding across kernels), in the order they came."""
    bundle, engines = demo
    xs = _inputs(bundle.stage(stage), 8, seed=stage)
    alone = _thread(bundle, engines, 1).run_many([Job(i, x, stage) for i, x in enumerate(xs)])
    together = _thread(bundle, engines, 8).run_many([Job(i, x, stage) for i, x in enumerate(xs)])
    assert [d.meta for d in together] == list(range(8))
    assert all(d.batch == 1 for d in alone) and all(d.batch == 8 for d in together)
    for a, t in zip(alone, together):
        assert t.error == ""
        if a.features is None:
            assert t.features is None
        else:
            assert t.features.shape == a.features.shape and t.features.flags.c_contiguous
            np.testing.assert_allclose(t.features, a.features, rtol=1e-4, atol=1e-5)
        if a.confidence is None:
            assert t.confidence is None
        else:
            assert t.confidence == pytest.approx(a.confidence, rel=1e-4, abs=1e-6)
            assert t.cls == a.cls


def test_a_share_of_a_batched_call_is_no_capacity_sample(demo):
    """Rule: each job of a batch carries an equal share of the call's engine time, and even a
    warm one gives the online estimate no sample (mu is one task per call); runs of one job on
    a batching thread give their samples again once WARM_RUNS of them ran back to back after
    the batched call (which starts a new streak)."""
    bundle, engines = demo
    t = _thread(bundle, engines, 8)
    xs = _inputs(bundle.stage(4), 8)
    dones = t.run_many([Job(i, x, 4) for i, x in enumerate(xs)], warm=True)
    assert len({d.engine_time_s for d in dones}) == 1 and dones[0].engine_time_s > 0
    assert [d.streak for d in dones] == list(range(8))
    assert all(d.capacity_sample_s == 0.0 for d in dones)
    alone = [t.run_many([Job(i, xs[0], 4)], warm=True)[0] for i in range(WARM_RUNS + 1)]
    assert [d.batch for d in alone] == [1] * (WARM_RUNS + 1)
    assert [d.streak for d in alone] == list(range(WARM_RUNS + 1))
    assert [d.capacity_sample_s > 0 for d in alone] == [False] * WARM_RUNS + [True]


def test_expired_jobs_are_not_run_and_the_rest_keep_their_places(demo):
    """Rule: a job past its deadline comes back ``deadline`` where it was; the jobs around it
    still run, batched together."""
    bundle, engines = demo
    t = _thread(bundle, engines, 8)
    xs = _inputs(bundle.stage(2), 4)
    jobs = [Job(i, x, 2) for i, x in enumerate(xs)]
    jobs[1].expires = t.clock() - 1.0
    dones = t.run_many(jobs)
    assert [d.meta for d in dones] == [0, 1, 2, 3]
    assert dones[1].reason == "deadline" and dones[1].features is None
    assert [dones[i].batch for i in (0, 2, 3)] == [3, 3, 3]


def test_runs_are_cut_at_a_change_of_stage_and_at_the_limit():
    """Rule: only consecutive jobs of one stage share a call, at most the stage's limit; a stage
    without a limit runs one job a call."""
    jobs = [Job(i, None, s) for i, s in enumerate([1, 1, 1, 2, 1, 3, 3])]
    got = [[j.meta for j in run] for run in chunks(jobs, {1: 2, 2: 8})]
    assert got == [[0, 1], [2], [3], [4], [5], [6]]


class _Stub:
    """An engine's surface (``stage``, ``run``; ``max_batch`` as ``engines.trt_backend``'s):
    echoes its input as features; an input holding NaN fails the call."""

    def __init__(self, dynamic=True, max_batch=None):
        self.stage = SimpleNamespace(dynamic_batch=dynamic)
        if max_batch is not None:
            self.max_batch = max_batch
        self.calls = []

    def run(self, x):
        self.calls.append(x.shape[0])
        if np.isnan(x).any():
            raise ValueError("NaN in the input")
        return StageOutput(features=x * 2, logits=None)


def test_the_limit_follows_the_bundle_and_the_engine():
    """Rule: a stage batches only where its input takes any batch size, up to a native
    engine's own ``max_batch``; ``batch_max`` 1 is off."""
    assert batch_limit(_Stub(dynamic=True), 8) == 8
    assert batch_limit(_Stub(dynamic=True), 1) == 1
    assert batch_limit(_Stub(dynamic=False), 8) == 1
    assert batch_limit(_Stub(dynamic=True, max_batch=1), 8) == 1
    assert batch_limit(_Stub(dynamic=True, max_batch=4), 8) == 4
    assert batch_limit(object(), 8) == 1  # no stage spec: nothing says it takes a batch


def test_a_stage_that_cannot_batch_is_logged_with_why(caplog):
    """Rule: with ``batch_max`` > 1, each stage left at one task per call is logged at WARNING
    with its reason; nothing is logged with batching off."""
    engines = {1: _Stub(dynamic=False), 2: _Stub(max_batch=1), 3: _Stub()}
    with caplog.at_level(logging.WARNING, logger="agent.node.batching"):
        assert batch_limits(engines, 1) == {1: 1, 2: 1, 3: 1}
        assert not caplog.records
        assert batch_limits(engines, 4) == {1: 1, 2: 1, 3: 4}
        assert batch_limits(engines, 4, "its policy keeps each head's logits") == {1: 1, 2: 1,
                                                                                  3: 1}
    text = [r.getMessage() for r in caplog.records]
    assert any("stage 1" in m and "fixed batch of 1" in m for m in text)
    assert any("stage 2" in m and "built for batch 1" in m for m in text)
    assert any("stage 3" in m and "logits" in m for m in text)


def test_a_failing_batch_runs_again_job_by_job_so_one_bad_job_fails_alone(caplog):
    """Rule: when the batched call raises (logged), each job runs alone: the bad one comes back
    ``engine_error``, the others with their outputs."""
    stub = _Stub()
    t = InferenceThread({1: stub}, {1: 1.0}, batch_max=8)
    xs = [np.full((1, 2), float(i), dtype=np.float32) for i in range(4)]
    xs[2][0, 0] = np.nan
    with caplog.at_level(logging.WARNING):
        dones = t.run_many([Job(i, x, 1) for i, x in enumerate(xs)])
    assert stub.calls == [4, 1, 1, 1, 1]
    assert "batched engine call failed" in caplog.records[0].getMessage()
    assert [d.reason for d in dones] == ["", "", "engine_error", ""]
    np.testing.assert_array_equal(dones[3].features, xs[3] * 2)


def test_an_emulated_device_or_a_thread_keeping_logits_does_not_batch_and_says_so(caplog):
    """Rule: MLCI's thread (``head_logits``) and an emulated device (its service time padded
    job by job) run one task per call whatever ``batch_max``, each stage logged with why."""
    with caplog.at_level(logging.WARNING, logger="agent.node.batching"):
        t = LogitsInferenceThread({1: _Stub()}, {1: 1.0}, batch_max=8)
        assert not t.batching and t.batch_limits == {1: 1}
        t = InferenceThread({1: _Stub()}, {1: 1.0}, emulate_capacity_flops=1e6, batch_max=8)
        assert not t.batching and t.batch_limits == {1: 1}
    text = [r.getMessage() for r in caplog.records]
    assert len(text) == 2 and "logits" in text[0] and "emulated" in text[1], text
    assert InferenceThread({1: _Stub()}, {1: 1.0}, batch_max=8).batching


def test_engine_batch_max_is_checked_in_the_node_config(tmp_path):
    """Rule: ``engine_batch_max`` defaults to 1 and takes 1..ENGINE_BATCH_MAX, no more than the
    jobs a worker hands its engine at a time; anything else is a config error naming it."""
    base = {"node_id": "w1", "role": "worker", "stage": 1, "bundle": DEMO_BUNDLE_DIR,
            "state_dir": str(tmp_path), "control_bind": "tcp://127.0.0.1:5551",
            "data_bind": "tcp://127.0.0.1:5552",
            "peers": [{"id": "s1", "stage": 0, "control_address": "tcp://127.0.0.1:5553",
                       "data_address": "tcp://127.0.0.1:5554"}]}
    assert parse_config(base).engine_batch_max == 1
    assert parse_config(dict(base, engine_batch_max=ENGINE_BATCH_MAX)).engine_batch_max == 8
    for bad in (0, ENGINE_BATCH_MAX + 1, 2.5, "4"):
        with pytest.raises(ConfigError, match="engine_batch_max"):
            parse_config(dict(base, engine_batch_max=bad))
    assert ENGINE_BATCH_MAX <= min(worker.ENGINE_DEPTH, inference.RUN_MAX)
