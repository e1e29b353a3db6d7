"""``StartupSignals`` (a stop signal while the agent starts) and ``Hangups`` (SIGHUP's work off
the handler), with real signals sent to this process."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest

from agent.ops.hangup import Hangups
from agent.ops.startstop import StartupSignals, StoppedStarting

WAIT_S = 30.0


def _until(cond, what):
    end = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < end, what
        time.sleep(0.01)


@pytest.fixture
def starting():
    s = StartupSignals().arm()
    try:
        yield s
    finally:
        s.disarm()


def test_a_stop_signal_while_writing_is_only_noted_and_acted_on_at_the_next_step(starting):
    """Rule: outside interruptible(), SIGTERM raises nothing where it lands (a write there
    finishes); the next step() raises StoppedStarting, whose line names the signal, the steps
    done (the one just finished too) and that no task was taken; exit status 0."""
    starting.step("config read")
    os.kill(os.getpid(), signal.SIGTERM)
    _until(lambda: starting.signum is not None, "SIGTERM noted")
    with pytest.raises(StoppedStarting) as got:
        starting.step("state_dir locked")
    line = str(got.value)
    assert line.startswith("stopped by SIGTERM during start-up")
    assert "config read, state_dir locked" in line and "no task was taken" in line
    assert got.value.exit_status == 0
    starting.step("after")  # raised once: clean-up that follows never raises it again


def test_a_stop_signal_inside_an_interruptible_step_ends_it_at_once(starting):
    """Rule: within interruptible() (loading, measuring) SIGINT raises StoppedStarting where
    the main thread is; a second signal meanwhile is ignored (the first is acted on)."""
    starting.step("bundle read")
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(StoppedStarting, match="stopped by SIGINT during start-up"):
        with starting.interruptible():
            deadline = time.monotonic() + 60.0  # an engine's timing runs, as long as it takes
            while time.monotonic() < deadline:
                time.sleep(0.01)
    timer.join()
    os.kill(os.getpid(), signal.SIGTERM)  # noted, ignored: no second raise, no death
    time.sleep(0.05)
    assert starting.signum == signal.SIGINT


def test_disarm_gives_the_signals_back_and_an_unarmed_one_never_stops():
    """Rule: disarm() restores the handlers arm() replaced; a StartupSignals never armed (a
    node built in code) never raises."""
    before = signal.getsignal(signal.SIGTERM)
    s = StartupSignals().arm()
    assert signal.getsignal(signal.SIGTERM) != before
    s.disarm()
    assert signal.getsignal(signal.SIGTERM) == before
    idle = StartupSignals()
    with idle.interruptible():
        idle.step("anything")
    assert idle.signum is None


def test_the_sighup_handler_only_wakes_a_thread_which_logs_or_reloads(caplog):
    """Rule: a SIGHUP's line is logged by the ``sighup`` thread, never by the handler on the
    main thread; one during start-up is said, then acted on once serving (a reload of the
    client keys, or the 'ignored' line); close() gives SIGHUP back."""
    before = signal.getsignal(signal.SIGHUP)

    class Keys:
        reloads = 0

        def reload(self):
            Keys.reloads += 1

    caplog.set_level(logging.INFO, logger="agent.run")
    h = Hangups().install()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        _until(lambda: any("during start-up" in r.getMessage() for r in caplog.records),
               "start-up SIGHUP said")
        h.serving(Keys())
        _until(lambda: Keys.reloads == 1, "the start-up SIGHUP acted on once serving")
        os.kill(os.getpid(), signal.SIGHUP)
        _until(lambda: Keys.reloads == 2, "a reload")
    finally:
        h.close()
    assert signal.getsignal(signal.SIGHUP) == before
    assert {r.threadName for r in caplog.records if r.name == "agent.run"} == {"sighup"}
    h2 = Hangups().install()
    try:
        h2.serving(None)
        os.kill(os.getpid(), signal.SIGHUP)
        _until(lambda: any("SIGHUP ignored" in r.getMessage() for r in caplog.records),
               "the ignored line")
    finally:
        h2.close()
    assert h2.handled == 1
    assert {r.threadName for r in caplog.records if r.name == "agent.run"} == {"sighup"}
