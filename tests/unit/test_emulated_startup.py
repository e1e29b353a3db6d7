"""An emulated device's start-up timing runs its real engine without the emulation's padding."""

from __future__ import annotations

import numpy as np

from agent.config.node import parse_config
from agent.node.capacity import worker_capacity
from agent.node.inference import InferenceThread
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from engines.loader import load_engine


def _cfg(tmp_path, emulated_s: float, flops: float):
    return parse_config({
        "node_id": "w1", "role": "worker", "stage": 1, "bundle": DEMO_BUNDLE_DIR,
        "state_dir": str(tmp_path), "control_bind": "tcp://127.0.0.1:5551",
        "data_bind": "tcp://127.0.0.1:5552", "emulate_capacity_flops": flops / emulated_s,
        "warmup_runs": 2, "timing_runs": 25,
        "peers": [{"id": "s1", "stage": 0, "control_address": "tcp://127.0.0.1:5541",
                   "data_address": "tcp://127.0.0.1:5542"},
                  {"id": "w2", "stage": 2, "control_address": "tcp://127.0.0.1:5561",
                   "data_address": "tcp://127.0.0.1:5562"}]})


def test_start_up_timing_of_an_emulated_worker_sleeps_for_no_padding(tmp_path):
    """Rule: with ``emulate_capacity_flops`` the start-up report is the emulated mu, and the
    real engine is timed unpadded (27 padded runs of a 0.25 s emulated stage would hold the
    worker's start for 7 s): the timing calls the engine itself, warmup_runs + timing_runs
    times, never the padding inference thread; serving still pads every task to the emulated
    time."""
    spec = load_bundle(DEMO_BUNDLE_DIR).stage(1)
    cfg = _cfg(tmp_path, 0.25, spec.flops)
    engine = load_engine(spec, backend="onnxruntime", threads=1)
    slept, calls = [], []

    class Counted:  # the real engine, its calls counted
        info = engine.info

        def run(self, x):
            calls.append(1)
            return engine.run(x)

    try:
        runner = InferenceThread({1: engine}, {1: spec.flops}, cfg.emulate_capacity_flops,
                                 sleep=slept.append)
        report = worker_capacity(cfg, {1: spec}, {1: Counted()})
        assert len(calls) == cfg.warmup_runs + cfg.timing_runs and slept == []
        assert report.origin == "emulated"
        assert report.capacity_flops == cfg.emulate_capacity_flops
        assert report.service_time_s == spec.flops / cfg.emulate_capacity_flops
        assert report.measured_capacity_flops > cfg.emulate_capacity_flops  # the real engine
        done = runner.run_one(np.zeros(spec.input_shape, dtype=spec.input_dtype), 1)
        assert len(slept) == 1 and done.service_time_s == report.service_time_s
    finally:
        engine.close()
