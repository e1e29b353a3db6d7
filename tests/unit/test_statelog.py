"""Lines about things that come and go (data connections, neighbours, routes) are bounded per
key, and the last line about a key always tells its present state (agent.node.statelog)."""

import logging
import time

from agent.node.statelog import StateLog

WALL0 = 1796464668.0  # the wall clock at the fake monotonic clock's 0


def _at(t):
    """The time of day a line held back names for a change at fake time ``t``."""
    return time.strftime("%H:%M:%S", time.localtime(WALL0 + t))


def _lines(caplog, what="data connection"):
    return [r.getMessage() for r in caplog.records if what in r.getMessage()]


def _link(log, peer, up):
    state = "up" if up else "dropped"
    log.event("data " + peer, state, "data connection to %s %s" % (peer, state))


def _started(caplog, links, *peers):
    """Each peer's connection first up at start (logged outside the burst); the log cleared."""
    for peer in peers:
        _link(links, peer, up=True)
    caplog.clear()


def test_a_keys_first_state_does_not_hold_back_a_drop_and_return_in_the_first_minute(caplog):
    """Rule: a key's first state (the connection up at start) is logged outside the burst, so
    a drop soon after and its return are both logged at once (the return waited a minute,
    the last line saying the peer was gone while it was back)."""
    caplog.set_level(logging.INFO)
    now = [0.0]
    links = StateLog(interval_s=60.0, clock=lambda: now[0])
    _link(links, "w2", up=True)
    now[0] = 5.0
    _link(links, "w2", up=False)
    now[0] = 7.0
    _link(links, "w2", up=True)
    assert _lines(caplog) == ["data connection to w2 up", "data connection to w2 dropped",
                              "data connection to w2 up"]
    assert links.pending() == []


def test_a_drop_and_its_return_are_logged_at_once_and_a_flap_costs_two_lines_a_minute(caplog):
    """Rule: the first ``burst`` (2) changes of a key are logged as they come; after that at
    most ``burst`` lines per interval, the held-back changes summed in the next one."""
    caplog.set_level(logging.INFO)
    now = [0.0]
    links = StateLog(interval_s=60.0, clock=lambda: now[0], wall=lambda: WALL0 + now[0])
    _started(caplog, links, "w2")
    _link(links, "w2", up=False)
    now[0] = 0.1
    _link(links, "w2", up=True)
    assert _lines(caplog) == ["data connection to w2 dropped", "data connection to w2 up"]
    for i in range(98):  # ten a second for ten seconds, as a mismatched CURVE key does
        now[0] += 0.1
        _link(links, "w2", up=i % 2 == 1)
    links.flush()
    assert len(_lines(caplog)) == 2 and links.pending() == ["data w2"]
    last_change = now[0]
    now[0] = 60.0
    links.flush()
    assert _lines(caplog)[2:] == [
        "data connection to w2 up (98 changes since the last line: dropped 49, up 49; "
        "the last at %s)" % _at(last_change)]
    assert links.pending() == []


def test_a_change_held_back_is_logged_with_the_present_state_when_due(caplog):
    """dropped and up at once (the burst), dropped again within the minute held back; the
    flush after the interval says dropped, the state the peer is in, and when it happened."""
    caplog.set_level(logging.INFO)
    now = [0.0]
    links = StateLog(interval_s=60.0, clock=lambda: now[0], wall=lambda: WALL0 + now[0])
    _started(caplog, links, "w2", "w3")
    _link(links, "w2", up=False)
    now[0] = 1.0
    _link(links, "w2", up=True)
    now[0] = 2.0
    _link(links, "w2", up=False)
    now[0] = 61.0
    _link(links, "w3", up=False)  # another peer has its own limit
    links.flush()
    assert _lines(caplog) == [
        "data connection to w2 dropped",
        "data connection to w2 up",
        "data connection to w3 dropped",
        "data connection to w2 dropped (at %s)" % _at(2.0)]


def test_changes_held_back_are_logged_when_the_node_stops(caplog):
    caplog.set_level(logging.INFO)
    now = [0.0]
    links = StateLog(interval_s=60.0, clock=lambda: now[0])
    _started(caplog, links, "w2")
    for up in (False, True, False, True):
        _link(links, "w2", up=up)
    links.flush()
    assert len(_lines(caplog)) == 2
    links.flush(final=True)
    assert _lines(caplog)[2:] == [
        "data connection to w2 up (2 changes since the last line: dropped 1, up 1)"]


def test_a_flapping_route_logs_its_summary_at_the_most_severe_level_held_back(caplog):
    """Rule: a route lost (WARNING) and back (INFO) every few seconds writes two lines a minute;
    the summary tells the present state (back) at WARNING, since losses were held back in it;
    a quiet change after that is logged at its own level."""
    caplog.set_level(logging.INFO)
    now = [0.0]
    log = StateLog(interval_s=60.0, clock=lambda: now[0], wall=lambda: WALL0 + now[0])
    lost = "no live route to stage 1: rejecting new tasks (no_route) until one is back"
    back = "route to stage 1 is back: accepting tasks again"
    log.event("route", "back", back)  # its first state, outside the burst
    caplog.clear()
    for i in range(10):
        now[0] = 4.0 * i
        log.event("route", "lost", lost, logging.WARNING)
        now[0] += 0.1
        log.event("route", "back", back)
    now[0] = 60.0
    log.flush()
    recs = [(r.levelno, r.getMessage()) for r in caplog.records if "route" in r.getMessage()]
    assert recs == [(logging.WARNING, lost), (logging.INFO, back),
                    (logging.WARNING, back + " (18 changes since the last line: back 9, lost 9; "
                     "the last at %s)" % _at(36.1))]
    now[0] = 200.0
    log.event("route", "lost", lost, logging.WARNING)
    now[0] = 300.0
    log.event("route", "back", back)
    assert [r.levelno for r in caplog.records][-2:] == [logging.WARNING, logging.INFO]


def test_a_route_back_after_a_held_loss_was_logged_is_said_at_once_not_a_minute_later(caplog):
    """Rule: the end of a trouble whose last line went out at WARNING is logged at once, past
    the limit: a route lost and back (the burst), lost again (held, then logged by the flush at
    WARNING) and back 5 s later is said at 65 s, not at 120 s (an operator read the route as
    lost for half a minute while it was back); a loss after that is held as before."""
    caplog.set_level(logging.INFO)
    now = [0.0]
    log = StateLog(interval_s=60.0, clock=lambda: now[0], wall=lambda: WALL0 + now[0])
    lost = "no live route to stage 2: refusing new tasks (no_route) until one is back"
    back = "route to stage 2 is back: accepting tasks again"
    log.event("route", "back", back)  # its first state
    caplog.clear()
    log.event("route", "lost", lost, logging.WARNING)
    now[0] = 1.0
    log.event("route", "back", back)
    now[0] = 2.0
    log.event("route", "lost", lost, logging.WARNING)  # held: two lines this minute
    now[0] = 60.0
    log.flush()
    now[0] = 65.0
    log.event("route", "back", back)
    now[0] = 66.0
    log.event("route", "lost", lost, logging.WARNING)
    recs = [(r.levelno, r.getMessage()) for r in caplog.records if "route" in r.getMessage()]
    assert recs == [(logging.WARNING, lost), (logging.INFO, back),
                    (logging.WARNING, lost + " (at %s)" % _at(2.0)), (logging.INFO, back)]
    assert log.pending() == ["route"]
