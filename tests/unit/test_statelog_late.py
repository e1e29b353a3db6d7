"""A line about a connection, neighbour or route that the rate limit held back says when its
change happened (``agent.node.statelog``): the journal stamps it at the flush, up to a minute
later, and an operator matching it with a kill or a cable pulled needs the change's time."""

import logging
import time

from agent.node.statelog import StateLog


def _local(y, mo, d, h, mi, s):
    """Unix seconds of a local time of day (what the suffix prints back)."""
    return time.mktime((y, mo, d, h, mi, s, 0, 0, -1))


def _neighbour(log, peer, alive):
    state = "alive" if alive else "gone"
    log.event("neighbour " + peer, state, "neighbour %s is %s" % (peer, state))


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if "neighbour" in r.getMessage()]


def _flapped(caplog, now, wall0):
    """slow first heard at 0, gone at 1 and back at 4 (the burst: both logged at once), then
    gone for good at 10, held back by the limit; the log cleared."""
    log = StateLog(interval_s=60.0, clock=lambda: now[0], wall=lambda: wall0 + now[0])
    _neighbour(log, "slow", True)
    for t, alive in ((1.0, False), (4.0, True), (10.0, False)):
        now[0] = t
        _neighbour(log, "slow", alive)
    assert _lines(caplog)[-2:] == ["neighbour slow is gone", "neighbour slow is alive"]
    caplog.clear()
    return log


def test_a_change_held_back_and_logged_a_minute_later_says_when_it_happened(caplog):
    """Rule: slow killed at 10:17:48 and held back by the limit is logged at the flush, at
    10:18:39 by the journal's stamp, as ``neighbour slow is gone (at 10:17:48)``."""
    caplog.set_level(logging.INFO)
    now = [0.0]
    log = _flapped(caplog, now, _local(2026, 12, 5, 10, 17, 38))
    assert _lines(caplog) == [] and log.pending() == ["neighbour slow"]
    now[0] = 61.0
    log.flush()
    assert _lines(caplog) == ["neighbour slow is gone (at 10:17:48)"]


def test_several_held_changes_name_the_time_of_the_last_one_after_the_counts(caplog):
    """Rule: with more than one change held back, the suffix keeps its counts and adds the
    time of the latest change, the one the line's state comes from."""
    caplog.set_level(logging.INFO)
    now = [0.0]
    log = _flapped(caplog, now, _local(2026, 12, 5, 10, 17, 38))
    for t, alive in ((20.0, True), (25.0, False)):
        now[0] = t
        _neighbour(log, "slow", alive)
    now[0] = 61.0
    log.flush()
    assert _lines(caplog) == ["neighbour slow is gone (3 changes since the last line: alive 1, "
                              "gone 2; the last at 10:18:03)"]


def test_a_line_logged_within_a_second_of_its_change_names_no_time(caplog):
    """Rule: a line that goes out at its change (the burst), or less than ``LATE_S`` after it
    (a stop's final flush at once), carries its own right time stamp and no suffix."""
    caplog.set_level(logging.INFO)
    now = [0.0]
    log = _flapped(caplog, now, _local(2026, 12, 5, 10, 17, 38))
    now[0] = 10.5
    log.flush(final=True)
    assert _lines(caplog) == ["neighbour slow is gone"]


def test_a_change_held_back_over_midnight_is_named_with_its_date(caplog):
    """Rule: a change of the day before the line (held over midnight) is named with its date,
    not only a time of day that would read as today's."""
    caplog.set_level(logging.INFO)
    now = [0.0]
    log = _flapped(caplog, now, _local(2026, 12, 5, 23, 59, 30))
    now[0] = 61.0  # 00:00:31 the next day
    log.flush()
    assert _lines(caplog) == ["neighbour slow is gone (at 2026-12-05 23:59:40)"]
