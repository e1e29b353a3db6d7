"""Start-up capacity (timed, emulated, from a profile), its one owner, emulated links' pacing."""

from __future__ import annotations

import numpy as np
import pytest

from agent.net.links import LinkPacer
from agent.node.capacity import (Capacity, CapacityReport, merge_reports, startup_capacity,
                                 time_engine)
from agent.policies.api import NodeView
from calibration.online import OnlineCapacityEstimator


class _CountingRun:
    """Stands in for ``InferenceThread.run_one``: counts calls, takes a known time."""

    def __init__(self, clock, seconds):
        self.clock, self.seconds, self.calls = clock, seconds, 0

    def __call__(self, x):
        self.calls += 1
        self.clock[0] += self.seconds[min(self.calls - 1, len(self.seconds) - 1)]


def test_time_engine_discards_warmup_and_takes_the_median():
    clock = [0.0]
    run = _CountingRun(clock, [9.0, 9.0, 0.1, 0.3, 0.2])
    median = time_engine(run, np.zeros(1), warmup_runs=2, timing_runs=3, clock=lambda: clock[0])
    assert run.calls == 5 and median == pytest.approx(0.2)


def test_startup_capacity_timed_emulated_and_profile(monkeypatch):
    import agent.node.capacity as cap

    monkeypatch.setattr(cap, "time_engine", lambda run, x, w, n, **kw: 0.01)  # the engine: 10 ms
    x = np.zeros(1)
    timed = startup_capacity(1e6, None, x, 1, 3)
    emu = startup_capacity(1e6, None, x, 1, 3, emulate_capacity_flops=1e7)
    prof = startup_capacity(1e6, None, x, 1, 3, profile_capacity_flops=5e7)
    assert timed.origin == "timed" and timed.capacity_flops == pytest.approx(1e8)
    assert emu.origin == "emulated" and emu.capacity_flops == 1e7
    assert emu.service_time_s == pytest.approx(0.1) and "EMULATED" in emu.describe()
    assert prof.origin == "profile" and prof.service_time_s == pytest.approx(0.02)


def test_several_stages_report_total_flops_over_total_service_time():
    """A worker holding several stages: mu = total flops / total service time; the service time
    is the mean per stage; emulation marks the merged report."""
    a = CapacityReport(1e8, 0.01, 1e8, "timed")
    b = CapacityReport(2e8, 0.03, 3e8, "timed")
    merged = merge_reports([a, b], 3e6, emulated=False)
    assert merged.capacity_flops == pytest.approx(3e6 / 0.04)
    assert merged.service_time_s == pytest.approx(0.02)
    assert merged.measured_capacity_flops == pytest.approx(2e8) and merged.origin == "timed"
    assert merge_reports([a, b], 3e6, emulated=True).origin == "emulated"
    assert merge_reports([a], 1e6, emulated=True) is a


def _view():
    return NodeView("w", "worker", 1, 1, (1e6,), (4.0,), (1,), (), (), {})


def test_capacity_owner_writes_startup_mu_into_the_view_without_an_estimator():
    cap = Capacity(CapacityReport(1e8, 0.01, 1e8, "timed"))
    cap.observe(1.0)  # no estimator: observations do not move mu
    view = _view()
    cap.refresh(view)
    assert view.capacity_flops == 1e8 and view.service_time_s == 0.01
    source = Capacity()
    source.refresh(view)
    assert view.capacity_flops == 0.0 and view.service_time_s == 0.0


def test_capacity_owner_follows_the_online_estimate_and_logs_drift_once(caplog):
    """Observed service times move mu (through the real online estimator); the view gets the
    estimate, and a drift from the start-up value is logged once, not per task."""
    report = CapacityReport(1e8, 0.01, 1e8, "timed")
    cap = Capacity(report, OnlineCapacityEstimator(1e6, report.capacity_flops, smoothing=1.0,
                                                   window=3))
    for _ in range(6):  # two windows of three
        cap.observe(0.02)  # twice as slow as at start-up
    view = _view()
    cap.refresh(view)
    assert view.capacity_flops == pytest.approx(5e7)
    assert view.service_time_s == pytest.approx(0.02)
    assert caplog.text.count("capacity drifted") == 1


def test_link_pacer_serialises_transfers_on_one_link():
    link = LinkPacer(1000.0)  # 1000 bytes/s
    assert link.schedule(10.0, 500) == pytest.approx(10.5)
    assert link.schedule(10.1, 500) == pytest.approx(11.0)  # waits for the first transfer
    assert link.schedule(20.0, 100) == pytest.approx(20.1)  # idle link: starts at once
    with pytest.raises(ValueError):
        LinkPacer(0.0)


def test_a_worker_refuses_to_start_on_a_stage_of_zero_flops():
    """mu is FLOP/s: a stage whose manifest counts 0 FLOPs would give mu = 0 (or a service
    time of 0); the worker stops with a UsageError naming the stage, not a traceback later."""
    import dataclasses
    from types import SimpleNamespace

    from agent.errors import UsageError
    from agent.node.capacity import worker_capacity
    from engines.bundle import load_bundle
    from engines.demo import DEMO_BUNDLE_DIR

    spec = dataclasses.replace(load_bundle(DEMO_BUNDLE_DIR).stage(2), flops=0)
    with pytest.raises(UsageError, match=r"stage\(s\) 2 have flops 0"):
        worker_capacity(SimpleNamespace(emulate_capacity_flops=0.0), {2: spec}, {2: None})
