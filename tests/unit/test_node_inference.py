"""The inference thread runs real onnxruntime stage engines; a job naming a stage with no
engine here is an error counted by reason, never run on another stage's engine."""

from __future__ import annotations

import select

import numpy as np

from agent.node.inference import InferenceThread, Job
from engines.loader import load_engine
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR


def _wait_done(runner, n):
    out = []
    while len(out) < n:
        ready, _, _ = select.select([runner.wake_fd], [], [], 30.0)
        assert ready, "inference thread gave no result within 30 s"
        out += runner.take_done()
    return out


def test_a_job_for_a_stage_without_an_engine_fails_with_reason_unknown_stage():
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    spec = bundle.stage(1)
    engine = load_engine(spec, backend="onnxruntime")
    runner = InferenceThread({1: engine}, {1: spec.flops})
    runner.start()
    try:
        x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
        runner.submit(Job(meta="known", x=x, stage=1))
        runner.submit(Job(meta="unknown", x=x, stage=3))
        done = {d.meta: d for d in _wait_done(runner, 2)}
    finally:
        runner.stop()
        engine.close()
    assert done["known"].error == "" and done["known"].features is not None
    assert done["unknown"].reason == "unknown_stage"
    assert done["unknown"].features is None and done["unknown"].confidence is None
    assert runner.queued == 0


def test_inference_thread_reports_whether_it_is_alive():
    class Engine:  # stands in for engines.Engine: only run() is called, never here
        def run(self, x):
            raise AssertionError("not called")

    runner = InferenceThread({1: Engine()}, {1: 1.0})
    runner.start()
    assert runner.alive
    runner.stop()
    assert not runner.alive
