"""Start-up capacity (timed, emulated, from a profile) and emulated links' pacing."""

from __future__ import annotations

import numpy as np
import pytest

from agent.net.links import LinkPacer
from agent.node.capacity import startup_capacity, time_engine


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

    monkeypatch.setattr(cap, "time_engine", lambda run, x, w, n: 0.01)  # the engine takes 10 ms
    x = np.zeros(1)
    timed = startup_capacity(1e6, None, x, 1, 3)
    emu = startup_capacity(1e6, None, x, 1, 3, emulate_capacity_flops=1e7)
    prof = startup_capacity(1e6, None, x, 1, 3, profile_capacity_flops=5e7)
    assert timed.origin == "timed" and timed.capacity_flops == pytest.approx(1e8)
    assert emu.origin == "emulated" and emu.capacity_flops == 1e7
    assert emu.service_time_s == pytest.approx(0.1) and "EMULATED" in emu.describe()
    assert prof.origin == "profile" and prof.service_time_s == pytest.approx(0.02)


def test_link_pacer_serialises_transfers_on_one_link():
    link = LinkPacer(1000.0)  # 1000 bytes/s
    assert link.schedule(10.0, 500) == pytest.approx(10.5)
    assert link.schedule(10.1, 500) == pytest.approx(11.0)  # waits for the first transfer
    assert link.schedule(20.0, 100) == pytest.approx(20.1)  # idle link: starts at once
    with pytest.raises(ValueError):
        LinkPacer(0.0)
