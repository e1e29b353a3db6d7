"""One mu, measured one way: ``edge-agent calibrate``, a worker's start-up timing and its online
estimate all take the service time of the engine call alone (``engines.timing.timed_run``), on
the same clock (the calling thread's CPU time for an engine that computes on it, else the wall
clock) and the same input; the exit heads' softmax is per-task overhead, never in the
estimator's input. Real onnxruntime engines; no test here asserts a speed."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

from agent.config.node import parse_config
from agent.node.capacity import worker_capacity
from agent.node.inference import WARM_RUNS, InferenceThread, Job
from calibration import runner as calibration_runner
from calibration.measure import measure_engine
from engines import timing
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from engines.engine import StageOutput
from engines.loader import load_engine
from engines.ort_backend import OrtEngine
from tests.unit.test_jtop_adapter import fake_module

SLEEP_S = 0.02  # a stand-in engine's call: asleep, so it takes wall time and almost no CPU time


def _spec(stage=1):
    return load_bundle(DEMO_BUNDLE_DIR).stage(stage)


def _worker_cfg(tmp_path, **over):
    raw = {"node_id": "w1", "role": "worker", "stage": 1, "bundle": DEMO_BUNDLE_DIR,
           "state_dir": str(tmp_path), "control_bind": "tcp://127.0.0.1:5551",
           "data_bind": "tcp://127.0.0.1:5552", "warmup_runs": 1, "timing_runs": 3,
           "peers": [{"id": "s1", "stage": 0, "control_address": "tcp://127.0.0.1:5541",
                      "data_address": "tcp://127.0.0.1:5542"},
                     {"id": "w2", "stage": 2, "control_address": "tcp://127.0.0.1:5561",
                      "data_address": "tcp://127.0.0.1:5562"}]}
    raw.update(over)
    return parse_config(raw)


class _Recorder:
    """Wraps ``engines.timing.timed_run``: every call's engine method, input and clock."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = timing.timed_run

        def record(run, x, clock):
            self.calls.append((run, np.array(x, copy=True), clock))
            return real(run, x, clock)

        monkeypatch.setattr(timing, "timed_run", record)

    def take(self):
        calls, self.calls = self.calls, []
        return calls


def test_calibrate_and_the_start_up_timing_time_the_engine_call_alone_on_one_clock_and_input(
        tmp_path, monkeypatch):
    """A real calibration (the CPU path) and a worker's start-up timing of the same stage both
    time each run through ``engines.timing.timed_run``: the onnxruntime engine's own ``run``
    (nothing around it), by the calling thread's CPU clock (onnxruntime on the CPU, one
    intra-op thread), on the same input, ``timing_input`` of the stage."""
    spec = _spec()
    recorder = _Recorder(monkeypatch)
    cfg = calibration_runner.CalibrationConfig(
        bundle_dir=DEMO_BUNDLE_DIR, profile_path=str(tmp_path / "profile.json"),
        state_dir=str(tmp_path / "state"), stages=(1,), modes="all", seconds=0.02,
        warmup_s=0.0, backend="onnxruntime")
    result = calibration_runner.calibrate(cfg, jtop_module=fake_module(str(tmp_path / "none")),
                                          stream=io.StringIO())
    assert [e.stage for e in result.entries] == [1]
    calibrated = recorder.take()
    engine = load_engine(spec, backend="onnxruntime", threads=1)
    try:
        report = worker_capacity(_worker_cfg(tmp_path), {1: spec}, {1: engine})
    finally:
        engine.close()
    assert report.origin == "timed"
    started = recorder.take()
    assert len(calibrated) >= 5 and len(started) >= 3  # every timed run went through it
    want = timing.timing_input(spec)
    for run, x, clock in calibrated + started:
        assert getattr(run, "__func__", None) is OrtEngine.run  # the engine call alone
        assert clock is time.thread_time
        assert x.dtype == want.dtype and np.array_equal(x, want)


class _Asleep:
    """A stage engine whose call sleeps SLEEP_S: the wall clock sees it, the CPU clock hardly."""

    def __init__(self, spec, device):
        self.spec = spec
        self.info = {"backend": "onnxruntime", "device": device, "threads": 1,
                     "precision": "fp32"}

    def run(self, x):
        time.sleep(SLEEP_S)
        return StageOutput(np.zeros(self.spec.feature_shape, dtype=np.float32),
                           np.zeros((1, 10), dtype=np.float32))


@pytest.mark.parametrize("device", ["CPU", "GPU"])
def test_calibrate_and_the_start_up_timing_choose_the_clock_by_one_rule(tmp_path, device):
    """An engine that computes on the calling thread (CPU, one thread) is timed by that
    thread's CPU time in calibrate and at a worker's start-up alike (a call asleep for SLEEP_S
    reads far less); any other (a GPU) by the wall clock in both (it reads at least SLEEP_S)."""
    spec = _spec()
    engine = _Asleep(spec, device)
    calibrated = measure_engine(engine, spec, 0.0, warmup_s=0.0).service_time_median_s
    runner = InferenceThread({1: engine}, {1: spec.flops})
    started = worker_capacity(_worker_cfg(tmp_path), {1: spec}, {1: engine}).service_time_s
    if device == "CPU":
        assert runner.service_clock[1] is time.thread_time
        assert calibrated < SLEEP_S / 2 and started < SLEEP_S / 2
    else:
        assert calibrated >= SLEEP_S and started >= SLEEP_S


def test_the_estimators_input_is_the_engine_call_of_a_warm_run_without_the_softmax_share():
    """On a stage with an exit head, a run's service time adds its share of the heads'
    softmax to the engine call; what the online estimate takes (``capacity_sample_s``) is the
    engine call alone, and nothing for the first WARM_RUNS runs of a streak."""
    spec = _spec()
    engine = load_engine(spec, backend="onnxruntime", threads=1)
    try:
        runner = InferenceThread({1: engine}, {1: spec.flops})
        x = timing.timing_input(spec)
        dones = runner.run_many([Job(meta=i, x=x, stage=1) for i in range(WARM_RUNS + 3)])
    finally:
        engine.close()
    for done in dones:
        assert done.confidence is not None and done.service_time_s >= done.engine_time_s > 0
    assert [d.capacity_sample_s for d in dones] == [0.0] * WARM_RUNS + [
        d.engine_time_s for d in dones[WARM_RUNS:]]


def test_an_emulated_worker_feeds_the_estimator_its_padded_service_time():
    """Emulation is unchanged: a warm run on an emulated device gives the estimate the padded
    service time (flops / emulated mu), not the real engine's."""
    spec = _spec()
    engine = load_engine(spec, backend="onnxruntime", threads=1)
    slept = []
    emulated_s = 0.05
    try:
        runner = InferenceThread({1: engine}, {1: spec.flops}, spec.flops / emulated_s,
                                 sleep=slept.append)
        x = timing.timing_input(spec)
        dones = runner.run_many([Job(meta=i, x=x, stage=1) for i in range(WARM_RUNS + 2)])
    finally:
        engine.close()
    assert len(slept) == WARM_RUNS + 2
    warm = dones[WARM_RUNS:]
    assert all(d.capacity_sample_s == d.service_time_s == pytest.approx(emulated_s, rel=1e-9)
               for d in warm)
    assert all(0 < d.engine_time_s < emulated_s for d in warm)
    assert [d.capacity_sample_s for d in dones[:WARM_RUNS]] == [0.0] * WARM_RUNS


def test_a_worker_with_a_profile_entry_warms_its_engine_up_as_a_timed_one_does(tmp_path):
    """With mu from the profile nothing is timed, but the engine runs warmup_runs +
    timing_runs times on the timing input before serving, as a timed start-up runs it: the
    first tasks served (and the online estimate) meet an engine past its first slow runs."""
    spec = _spec()
    real = load_engine(spec, backend="onnxruntime", threads=1)
    seen = []

    class Counted:  # the real engine, its calls and inputs seen
        info = real.info

        def run(self, x):
            seen.append(np.array(x, copy=True))
            return real.run(x)

    engine = Counted()
    try:
        timed = worker_capacity(_worker_cfg(tmp_path), {1: spec}, {1: engine})
        n_timed = len(seen)
        cfg = _worker_cfg(tmp_path, capacity_profile=str(tmp_path / "profile.json"))
        calibration_runner.calibrate(calibration_runner.CalibrationConfig(
            bundle_dir=DEMO_BUNDLE_DIR, profile_path=cfg.capacity_profile,
            state_dir=str(tmp_path / "state"), stages=(1,), seconds=0.02, warmup_s=0.0,
            backend="onnxruntime"), jtop_module=fake_module(str(tmp_path / "none")),
            stream=io.StringIO())
        from_profile = worker_capacity(cfg, {1: spec}, {1: engine})
    finally:
        real.close()
    assert timed.origin == "timed" and from_profile.origin == "profile"
    assert n_timed == len(seen) - n_timed == cfg.warmup_runs + cfg.timing_runs
    want = timing.timing_input(spec)
    assert all(np.array_equal(x, want) for x in seen)
