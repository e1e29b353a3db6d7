"""A calibration run under ``nohup`` (SIGHUP ignored) keeps SIGHUP ignored: its session closing
must not stop it, while SIGINT and SIGTERM still end it with the mode restored."""

from __future__ import annotations

import signal

from calibration.runner import _signals


def test_an_ignored_sighup_stays_ignored_while_sigint_and_sigterm_are_taken():
    """Rule: ``_signals`` takes over SIGINT, SIGTERM and SIGHUP, but one ignored (nohup's
    SIGHUP) stays ignored, and every handler is put back afterwards."""
    def handler(signum, frame):
        pass

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with _signals(handler):
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGINT) is handler
            assert signal.getsignal(signal.SIGTERM) is handler
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with _signals(handler):  # not ignored: taken, as after a plain start
            assert signal.getsignal(signal.SIGHUP) is handler
    finally:
        for s, h in before.items():
            signal.signal(s, h)
