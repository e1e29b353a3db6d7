"""agent.commands.interrupts: a terminal's signals end a long command as Ctrl-C does, each with
its exit status, and a signal ignored before (nohup's SIGHUP) stays ignored."""

from __future__ import annotations

import signal

import pytest

from agent.commands.interrupts import HungUp, Terminated, as_interrupts, signal_name


def test_sigterm_and_sighup_raise_their_interrupts_and_the_handlers_come_back():
    """Inside the block SIGTERM raises Terminated (143) and SIGHUP HungUp (129); after it the
    handlers before are in place again."""
    before = signal.getsignal(signal.SIGTERM)
    for signum, exc, status, name in ((signal.SIGTERM, Terminated, 143, "SIGTERM"),
                                      (signal.SIGHUP, HungUp, 129, "SIGHUP")):
        with pytest.raises(exc) as got:
            with as_interrupts():
                signal.raise_signal(signum)
        assert got.value.exit_status == status and signal_name(got.value) == name
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_ignored_before_stays_ignored():
    """Under nohup SIGHUP is ignored so that a closed session does not stop the command."""
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with as_interrupts():
            signal.raise_signal(signal.SIGHUP)  # nothing happens
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, old)
