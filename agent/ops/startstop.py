"""SIGTERM or SIGINT while an agent starts: one line saying so, and the loop's own exit status.

``systemctl stop`` (or ``restart``) may come while the agent still imports its libraries, reads
its bundle, loads its engine (minutes for a TensorRT plan build) or binds its sockets. Their
default actions ended the agent at once: a death by SIGTERM, status 143 in a shell, and not one
line of its own in the journal. From the first thing ``run`` does until the loop's handlers take
over (``agent.node.build.serve``), ``StartupSignals`` holds SIGTERM and SIGINT instead:

- while the agent writes (state lock, records, the recovery of a crashed run's tasks) a signal is
  only noted, and acted on at the next step's end (``step``), so no file is left half-written;
- while it only loads and measures (``interruptible``: the engines, the capacity timing) a
  signal ends the wait at once, since nothing there needs finishing (a C call in progress, an
  engine's load, still runs to its end: Python handles a signal between two of its own steps).

Either way ``StoppedStarting`` unwinds the start-up (what it opened is closed, the state
directory's lock let go) and ``run`` logs ``line()``: which signal, what start-up had done, and
that no task was taken. It exits 0, as the loop does after its drain: systemd takes the stop
for a normal one. A second signal meanwhile is ignored (the first is acted on already), unless
the first one's ``StoppedStarting`` was lost: raised while a callback ran that Python cannot
raise from (importlib's module-lock weakref callback, as libraries import while engines load),
where it was dropped and the start-up went on. The entry point's hook
(``agent.__main__.resend_lost_interrupts``) then calls ``StoppedStarting.lost``, which makes
the stop due again (the next ``step`` raises it) and gives the signal to send again (raised at
once inside ``interruptible``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Dict, Iterator, List, Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StoppedStarting(KeyboardInterrupt):
    """A stop signal came before the agent served; ``run`` logs the line and exits 0.

    A KeyboardInterrupt, not an Exception: start-up code that turns any fault into a config
    error (``except Exception``) lets it pass, and clean-up (``except BaseException``) runs."""

    exit_status = 0  # as the loop's stop: systemd's normal stop, no failure, no restart


class StartupSignals:
    """Holds SIGTERM and SIGINT from ``arm()`` until the loop's handlers replace them (main
    thread only; elsewhere nothing is held); ``step`` names what is done and acts on a signal
    noted meanwhile; within ``interruptible()`` one acts at once. Never armed (a caller that
    builds a node in code), it does nothing."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None  # the first stop signal, once one came
        self.done: List[str] = []  # what start-up finished, in order
        self._hot = 0  # depth of interruptible() blocks
        self._raised = False  # StoppedStarting raised already: never twice
        self._previous: Dict[int, Any] = {}

    def arm(self) -> "StartupSignals":
        """Hold the stop signals from now on; returns self."""
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in STOP_SIGNALS
                              if signal.getsignal(s) is not signal.SIG_IGN}
        return self

    def disarm(self) -> None:
        """Put back the handlers ``arm`` replaced (a start-up that ends in a fault)."""
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: set in C
        self._previous = {}

    def _note(self, signum: int, _frame: Any) -> None:
        if self._raised:
            return  # the first one is being acted on
        if self.signum is None:
            self.signum = signum
        if self._hot:
            raise self._stopped()

    def _stopped(self) -> StoppedStarting:
        self._raised = True
        stopped = StoppedStarting(self.line())
        stopped.lost = self._lost
        return stopped

    def _lost(self) -> int:
        """The ``StoppedStarting`` raised was dropped (module docstring): due again; returns
        the signal to send again."""
        self._raised = False
        return int(self.signum if self.signum is not None else signal.SIGTERM)

    def check(self) -> None:
        """Raise ``StoppedStarting`` when a stop signal has come (and was not acted on)."""
        if self.signum is not None and not self._raised:
            raise self._stopped()

    def step(self, what: str) -> None:
        """``what`` (e.g. "bundle read") is done; then act on a stop signal noted meanwhile."""
        self.done.append(what)
        self.check()

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within the block a stop signal raises ``StoppedStarting`` at once: for steps that
        write nothing (loading, measuring)."""
        self._hot += 1  # first: a signal between the check and this would only be noted
        try:
            self.check()
            yield
        finally:
            self._hot -= 1

    def line(self) -> str:
        """What the agent logs when stopped during start-up."""
        name = signal.Signals(self.signum).name if self.signum is not None else "a signal"
        return ("stopped by %s during start-up (done: %s); it never served: no task was taken "
                "or sent" % (name, ", ".join(self.done) or "nothing yet"))
