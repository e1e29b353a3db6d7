"""A node's wall clock stepping while it serves (a Jetson without an RTC battery boots at a stale
time that NTP steps later; ``date -s``): one WARNING per step whatever the policy, none for a
loop that stalled, and held-back state lines that never date a change after the line itself."""

import logging
import time

from agent.node.clockstep import ClockStepWatch
from agent.node.statelog import StateLog
from tests.unit.test_status_line import _status as _worker_status

DAY_S = 86400.0


def _step_lines(caplog):
    return [r for r in caplog.records if "wall clock stepped" in r.getMessage()]


def _status(tmp_path, mono, wall):
    return _worker_status(tmp_path, wall=lambda: wall[0], mono=lambda: mono[0])


def test_a_step_of_either_sign_is_one_warning_at_the_next_status_line(tmp_path, caplog):
    """Rule: a node of any policy says a wall-clock step (forward or back) in one WARNING, at
    the status line after it, naming its sign and size; the lines after it say nothing more."""
    caplog.set_level(logging.INFO, logger="agent.node.loop")
    mono, wall = [100.0], [1.5e9]  # a stale boot clock (2017)
    status = _status(tmp_path, mono, wall)
    status.log_line(mono[0])
    for step in (300 * DAY_S, -2 * DAY_S):
        mono[0] += 5.0
        wall[0] += 5.0 + step
        status.log_line(mono[0])
        mono[0] += 5.0
        wall[0] += 5.0
        status.log_line(mono[0])
    lines = _step_lines(caplog)
    assert [r.levelno for r in lines] == [logging.WARNING] * 2, [r.getMessage() for r in lines]
    assert "stepped forward about 25920000 s" in lines[0].getMessage()
    assert "stepped back about 172800 s" in lines[1].getMessage()
    assert status.clock_steps.steps == 2


def test_a_stalled_loop_or_ntp_slewing_is_no_step(caplog):
    """Rule: only a change of wall minus monotonic time is a step: a loop stalled for an hour
    (both clocks moved alike) and NTP's slewing (0.5 ms a second at most) log nothing."""
    caplog.set_level(logging.INFO, logger="agent.node.loop")
    watch = ClockStepWatch()
    assert watch.check(10.0, 1.7e9) == 0.0  # the first reading: nothing to compare with
    assert watch.check(3610.0, 1.7e9 + 3600.0) == 0.0  # an hour's stall
    assert watch.check(3615.0, 1.7e9 + 3605.0025) == 0.0  # slewed 2.5 ms in 5 s
    assert watch.steps == 0 and _step_lines(caplog) == []


def test_a_held_back_line_after_a_step_back_dates_its_change_before_the_line(caplog):
    """Rule: a state line held back by the burst limit names when its change happened as the
    wall clock's now less the monotonic time since, so a clock stepped back a day in between
    does not date the change a day after the line that tells of it."""
    caplog.set_level(logging.INFO, logger="agent.node.loop")
    mono, wall = [1000.0], [time.mktime((2026, 12, 5, 12, 0, 0, 0, 0, -1))]
    log = StateLog(interval_s=60.0, clock=lambda: mono[0], burst=1, wall=lambda: wall[0])
    log.event("w1", "up", "w1 up")
    log.event("w1", "down", "w1 down")
    mono[0] += 1.0
    wall[0] += 1.0
    log.event("w1", "up", "w1 up")  # held back: the burst is used
    mono[0] += 70.0
    wall[0] += 70.0 - DAY_S  # 70 s later the clock was stepped back a day
    log.flush()
    expected = time.strftime("%H:%M:%S", time.localtime(wall[0] - 70.0))
    assert caplog.records[-1].getMessage() == "w1 up (at %s)" % expected
