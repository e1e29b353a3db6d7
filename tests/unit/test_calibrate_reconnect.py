"""Calibrating through a restart of the jtop service (``calibration.jtop_restart``): how long
the run waits for the service, when it does a mode again and when it gives up. The waiting runs
on a stepped clock; the sessions are small stand-ins with ``reopen`` only, except where the
fake board of ``test_jtop_adapter`` stands in for jetson-stats (the real service restarting
mid-run is ``tests/integration/test_calibrate_jtop_restart.py``)."""

from __future__ import annotations

import logging

import pytest

from calibration import jtop_restart
from calibration.jtop_adapter import ConnectionLost, JtopUnavailable, ModeInfo
from calibration.jtop_restart import JtopSession, through_restarts, wait_for_service
from calibration.modes import ModeKeeper
from tests.unit.test_jtop_adapter import MODELS, _write_board, fake_module, new_board, read_board

LOST = ConnectionLost("the connection to the jtop service was lost (Lost connection with jtop "
                      "server)")


class SteppedClock:
    """A clock that moves only when slept on."""

    def __init__(self):
        self.now = 100.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def _failing(times, then="device"):
    """connect() failing ``times`` times (as a service still down does), then giving ``then``."""
    tries = []

    def connect():
        tries.append(1)
        if len(tries) <= times:
            raise JtopUnavailable("jtop service not reachable (The jtop.service is not active. "
                                  "Please run:\nsudo jtop --install-service)")
        return then

    return connect, tries


def test_wait_for_service_returns_the_connection_once_the_service_answers():
    """Rule: a service back within the bound is reconnected to, tried every retry_s seconds."""
    clock = SteppedClock()
    connect, tries = _failing(2)
    assert wait_for_service(connect, LOST, 30.0, clock=clock, sleep=clock.sleep,
                            retry_s=1.0) == "device"
    assert len(tries) == 3 and clock.slept == [1.0, 1.0]


def test_wait_for_service_gives_up_at_the_bound_with_the_loss_and_the_last_try():
    """Rule: a service not back within the bound (--switch-timeout) ends the wait by that
    bound, never later, with one line: the loss, the bound and the last try's error."""
    clock = SteppedClock()
    connect, tries = _failing(1000)
    with pytest.raises(JtopUnavailable) as err:
        wait_for_service(connect, LOST, 2.5, clock=clock, sleep=clock.sleep, retry_s=1.0)
    assert clock.now - 100.0 == pytest.approx(2.5) and len(tries) == 4
    line = str(err.value)
    assert line.startswith(str(LOST) + ", and the jtop service did not answer again within 2 s "
                           "(--switch-timeout; last try: jtop service not reachable"), line
    assert "\n" not in line and not isinstance(err.value, ConnectionLost)


def test_wait_for_service_ends_on_a_pending_signal():
    """Rule: a signal (SIGTERM) while the service is waited for ends the wait at once."""
    clock = SteppedClock()
    connect, tries = _failing(1000)

    def check():
        if len(tries) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wait_for_service(connect, LOST, 60.0, clock=clock, sleep=clock.sleep, check=check)
    assert len(tries) == 2


class Session:
    """Stand-in for JtopSession: ``reopen`` gives the next device, or raises ``fail``."""

    def __init__(self, fail=None):
        self.reopened = []
        self.fail = fail

    def reopen(self, lost, timeout_s, check=None):
        self.reopened.append((lost, timeout_s))
        if self.fail is not None:
            raise self.fail
        return "device %d" % len(self.reopened)


def _attempts(*outcomes):
    """attempt() raising or returning each of ``outcomes`` in turn; and its call count."""
    calls = []

    def attempt():
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return attempt, calls


def test_a_mode_cut_by_a_restart_is_done_again_after_reconnecting(caplog):
    """Rule: a connection lost during a mode is waited for, the new device handed on (the mode
    keeper's), one line logged, and the mode done again from the start; its result is the
    second attempt's."""
    session, handed = Session(), []
    attempt, calls = _attempts(LOST, ["entry"])
    with caplog.at_level(logging.WARNING, logger="calibration.jtop_restart"):
        got = through_restarts(session, attempt, "calibrating power mode MAXN (id 0)", 30.0,
                               reconnected=handed.append)
    assert got == ["entry"] and len(calls) == 2 and handed == ["device 1"]
    assert session.reopened == [(LOST, 30.0)]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(
        str(LOST) + " while calibrating power mode MAXN (id 0); the jtop service answered "
        "again after "), lines


def test_a_mode_lost_again_after_its_restart_ends_the_run():
    """Rule: a mode is done again at most RESTARTS_PER_MODE times: a service that keeps going
    away ends the run with the loss (one line, exit 1 in the command), never loops."""
    assert jtop_restart.RESTARTS_PER_MODE == 1
    session = Session()
    again = ConnectionLost("the connection to the jtop service was lost ([Errno 32] Broken pipe)")
    attempt, calls = _attempts(LOST, again, ["never"])
    with pytest.raises(ConnectionLost) as err:
        through_restarts(session, attempt, "calibrating power mode MAXN (id 0)", 30.0)
    assert err.value is again and len(calls) == 2 and len(session.reopened) == 1


def test_a_service_not_back_in_time_ends_the_run_with_its_line():
    """Rule: when the service does not answer again within the bound, the wait's error ends
    the run and the mode is not tried again."""
    gone = JtopUnavailable("... did not answer again within 30 s")
    attempt, calls = _attempts(LOST, ["never"])
    with pytest.raises(JtopUnavailable) as err:
        through_restarts(Session(fail=gone), attempt, "calibrating power mode MAXN (id 0)", 30.0)
    assert err.value is gone and len(calls) == 1


def test_other_jtop_errors_are_not_waited_for():
    """Rule: only a lost connection is waited out; another jtop error (the board in another
    mode after a restart, under --modes current) ends the run at once."""
    session = Session()
    other = JtopUnavailable("the jtop service restarted and the board is in power mode 15W")
    attempt, calls = _attempts(other)
    with pytest.raises(JtopUnavailable) as err:
        through_restarts(session, attempt, "calibrating power mode MAXN (id 0)", 30.0)
    assert err.value is other and session.reopened == []


def test_session_reopen_closes_the_old_connection_and_hands_out_a_new_device(tmp_path):
    """Rule: reopening gives a new device on a new client of the service."""
    board = new_board(tmp_path / "board.json")
    with JtopSession(fake_module(board), interval_s=0.001) as session:
        first = session.device
        second = session.reopen(LOST, 5.0)
        assert second is session.device and second is not first
        assert second.current_mode().name == MODELS[0]


def test_keeper_measures_every_mode_with_the_jetson_clocks_of_before_the_run(tmp_path):
    """Rule: a mode switched to again after the service restarted (which may have turned
    jetson_clocks off) is measured with jetson_clocks as it was before the run, as every other
    mode is."""
    board = new_board(tmp_path / "board.json", mode=0, jetson_clocks=True)
    with JtopSession(fake_module(board), interval_s=0.001) as session:
        keeper = ModeKeeper(session.device, str(tmp_path / "state"), 30.0)
        keeper.switch(ModeInfo(1, MODELS[1], True))
        assert read_board(board)["jetson_clocks"] is True
        state = read_board(board)
        state["jetson_clocks"] = False  # the restarted service left it off
        _write_board(board, state)
        keeper.device = session.reopen(LOST, 5.0)
        keeper.switch(ModeInfo(4, MODELS[4], True))
        assert read_board(board)["mode"] == 4 and read_board(board)["jetson_clocks"] is True
        keeper.restore()
    assert read_board(board)["mode"] == 0
