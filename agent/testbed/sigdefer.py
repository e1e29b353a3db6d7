"""Clean-up that a terminal's signals cannot cut short: Ctrl-C pressed again, SIGTERM, SIGHUP.

The testbed stops on the first Ctrl-C (or SIGTERM, or a hang-up) and then removes what it made:
agent processes, network namespaces, its notify socket. A second Ctrl-C raising
``KeyboardInterrupt`` inside that clean-up would leave namespaces, with agents still serving
in them, behind. Inside ``DeferredSignals()`` those signals are only noted; the
handlers are swapped, not the signal mask, since Python runs every handler on the main thread
whichever thread the kernel picks, so a mask on one thread would not hold them.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import List

TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class DeferredSignals:
    """``with DeferredSignals(): ...`` notes SIGINT, SIGTERM and SIGHUP instead of acting on
    them (main thread only; a signal ignored before, as ``nohup`` ignores SIGHUP, stays
    ignored). At the end the handlers are restored and the first signal noted is raised again,
    unless an exception is propagating (an interrupt already under way, or the error whose
    clean-up this is: it ends the command).

    With ``first_acts``, the first of those signals inside the block is handed to the handler
    it had before (Ctrl-C: ``KeyboardInterrupt``, which ends a wait it lands in) and only the
    later ones are noted. A clean-up in an ``except`` or ``finally`` inside the block is then
    safe from the signals after the first from the instant the first was taken. Entered only
    in the clean-up, a deferral leaves a window (the clause's first bytecodes, its own set-up)
    before its handlers are in place, where a second Ctrl-C (pressed twice, or sent by two
    processes at once) escapes the clean-up."""

    def __init__(self, first_acts: bool = False) -> None:
        self.noted: List[int] = []
        self.acted: List[int] = []  # the one handed on (``first_acts``)
        self._first_acts = first_acts
        self._previous: dict = {}

    def _note(self, signum: int, frame) -> None:
        if self._first_acts and not self.acted:
            self.acted.append(signum)
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)  # raises as it would have: the block's wait ends
                return
            # SIG_DFL (or set in C): what it did before, ending the process
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.noted.append(signum)

    def __enter__(self) -> "DeferredSignals":
        # only the main thread may set handlers; on another one a signal cannot interrupt it
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in TERMINAL_SIGNALS
                              if signal.getsignal(s) is not signal.SIG_IGN}  # nohup's stays
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: set in C
        # sys.exc_info(): the exception a ``finally`` around this block is propagating
        if self.noted and exc_type is None and sys.exc_info()[0] is None:
            signal.raise_signal(self.noted[0])
