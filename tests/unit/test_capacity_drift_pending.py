"""A drift change inside the one-line-per-minute window is logged once the window has passed.

The drift flag of ``Capacity`` is logged at most once per ``DRIFT_WARNING_INTERVAL_S``; a change
that comes sooner stays pending and is logged, with the count of flips in between, by the next
task or the next ``refresh`` (status tick, heartbeat) after the window: the last line always
tells the flag as it is. Fake clock; the real online estimator.
"""

from __future__ import annotations

import logging

from agent.node.capacity import DRIFT_WARNING_INTERVAL_S, Capacity, CapacityReport
from agent.policies.api import NodeView
from calibration.online import OnlineCapacityEstimator

SLOW, NORMAL = 0.015, 0.01  # service times: 33% below mu, and mu (1e8 FLOP/s at 1e6 FLOP)


def _setup(caplog):
    now = [0.0]
    # window 1: each observation moves the estimate; the rule checked is the flag and its lines
    est = OnlineCapacityEstimator(1e6, 1e8, smoothing=1.0, drift_fraction=0.2, window=1)
    cap = Capacity(CapacityReport(1e8, 0.01, 1e8, "profile", "15W"), est, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="agent.node.capacity")
    return now, cap


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "agent.node.capacity"]


def test_a_lasting_drift_soon_after_the_last_line_is_logged_when_the_window_ends(caplog):
    """Drift at 0 s, back at 61 s, slow again at 62 s and for good: the drift is logged at the
    first task after 121 s (the old code waited for a flip that never came)."""
    now, cap = _setup(caplog)
    cap.observe(SLOW)
    now[0] = 61.0
    cap.observe(NORMAL)
    assert len(_lines(caplog)) == 2 and "back near" in _lines(caplog)[-1]
    now[0] = 62.0
    cap.observe(SLOW)  # drifts again inside the window: pending
    while now[0] < 61.0 + DRIFT_WARNING_INTERVAL_S - 0.5:
        now[0] += 0.5
        cap.observe(SLOW)
    assert len(_lines(caplog)) == 2
    now[0] = 61.0 + DRIFT_WARNING_INTERVAL_S
    cap.observe(SLOW)
    assert len(_lines(caplog)) == 3 and "capacity drifted" in _lines(caplog)[-1]
    assert "expected 1e+08 FLOP/s in mode 15W, now 6.67e+07" in _lines(caplog)[-1]


def test_a_pending_change_is_logged_by_refresh_without_tasks_and_counts_the_flips(caplog):
    """No task after the change: the status tick's ``refresh`` logs it, naming the flips in
    between; flips that end where the last line left the flag log nothing."""
    now, cap = _setup(caplog)
    cap.observe(SLOW)  # logged: drifted
    for t in (1.0, 2.0, 3.0):  # back, drifted, back: pending "back", 3 flips
        now[0] = t
        cap.observe(NORMAL if t != 2.0 else SLOW)
    view = NodeView("w", "worker", 1, 1, (1e6,), (4.0,), (1,), (), (), {})
    now[0] = 30.0
    cap.refresh(view)
    assert len(_lines(caplog)) == 1
    now[0] = DRIFT_WARNING_INTERVAL_S + 1
    cap.refresh(view)
    assert len(_lines(caplog)) == 2
    assert "back near its expected value" in _lines(caplog)[-1]
    assert "(and 2 more changes since the last line)" in _lines(caplog)[-1]
    now[0] = 2 * DRIFT_WARNING_INTERVAL_S + 2
    cap.observe(SLOW)  # logged at once: the window has passed
    now[0] += 1
    cap.observe(NORMAL)  # back inside the window: pending ...
    assert len(_lines(caplog)) == 3
    now[0] += DRIFT_WARNING_INTERVAL_S
    cap.refresh(view)  # ... and logged once it has passed
    assert len(_lines(caplog)) == 4 and "back near" in _lines(caplog)[-1]
    now[0] += 1
    cap.observe(SLOW)
    now[0] += 1
    cap.observe(NORMAL)  # drifted and back inside the window: the flag is as last logged
    now[0] += DRIFT_WARNING_INTERVAL_S
    cap.refresh(view)
    assert len(_lines(caplog)) == 4 and cap.drift_changes == 8

def test_rebase_starts_the_estimate_and_the_flag_from_a_new_expected_value(caplog):
    """A power mode's entry taken while drifted: mu and the baseline are the entry's, the flag
    is off, and a later drift is measured against the entry."""
    now, cap = _setup(caplog)
    cap.observe(SLOW)
    cap.rebase(CapacityReport(4e8, 0.0025, 0.0, "profile", "MAXN"))
    assert cap.capacity_flops == 4e8 and not cap.estimator.drifting
    now[0] = DRIFT_WARNING_INTERVAL_S + 1
    cap.observe(0.005)  # half of MAXN's mu
    assert "expected 4e+08 FLOP/s in mode MAXN, now 2e+08" in _lines(caplog)[-1]
