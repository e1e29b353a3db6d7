"""SIGHUP to an agent: a serving source re-reads its client keys; any other agent says and
ignores it.

A SIGHUP (a reload by habit, ``systemctl kill -s HUP``, a terminal hung up under a foreground
``run``) would end the agent at once, undrained and without saving its state, and systemd's
``Restart=on-failure`` takes a death by SIGHUP for a clean stop: the agent would stay down.
So it never ends the agent, from the first thing ``run`` does (``Hangups.install``) to its end.
A source with ``client_keys_dir`` reads that folder again (``agent.net.clientkeys``): a client
added or revoked there takes effect without a restart, which would record the tasks still in
flight after the drain as lost. Nothing else is reloaded (the config is read once), so on any
other agent the signal is logged and ignored. One that comes while the agent starts is acted
on once it serves (the keys read at start-up may be older than the signal).

The handler itself only writes one byte to a pipe; the reload and its log line run on a thread
of their own (``sighup``). A handler runs on the main thread wherever it is, also inside a
write to stderr that blocks (a stalled pipe or terminal): a log line from there is a reentrant
call into that stream, which raises ``RuntimeError`` into the logging call it interrupted, and
file reads there hold the loop. The reload swaps one dict that the threads reading it read
once per use (``AllowedClients.reload``), so it needs no lock; it never raises.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

log = logging.getLogger("agent.run")  # a serving agent's own lines are logged under this name

_HUP = b"h"  # written by the handler (and by ``serving`` for one held back during start-up)


class Hangups:
    """SIGHUP from ``install()`` to ``close()``: noted by the handler, acted on by a thread;
    ``serving(client_keys)`` says the agent serves and what a SIGHUP reloads (None: nothing)."""

    def __init__(self) -> None:
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._wfd, False)  # never blocks the handler: a full pipe has one already
        self._keys: Any = None
        self._serving = False
        self._missed = False  # a SIGHUP came during start-up
        self._phase = threading.Lock()  # start-up or serving: never taken by the handler
        self._previous: Any = None
        self._installed = False
        self._thread = threading.Thread(target=self._serve, name="sighup", daemon=True)
        self.handled = 0  # SIGHUPs acted on (one reload may answer several)

    def install(self) -> "Hangups":
        """Take SIGHUP over (main thread only; elsewhere the thread runs, the handler stays)."""
        self._thread.start()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGHUP, self._note)
            self._installed = True
        return self

    def _note(self, *_: Any) -> None:
        try:
            os.write(self._wfd, _HUP)
        except OSError:  # full (one is pending: it covers this one) or closed (stopping)
            pass

    def serving(self, client_keys: Any = None) -> None:
        """From now on a SIGHUP reloads ``client_keys`` (a source's ``AllowedClients``) or is
        logged and ignored; one that came during start-up is acted on now."""
        with self._phase:
            self._keys = client_keys
            self._serving = True
            if self._missed:
                self._note()

    def _serve(self) -> None:
        while True:
            try:
                got = os.read(self._rfd, 512)
            except OSError:
                return
            if not got:  # ``close``: the write end is closed
                return
            self._act()

    def _act(self) -> None:
        with self._phase:
            starting = not self._serving
            self._missed = self._missed or starting
        if starting:
            log.info("SIGHUP during start-up: acted on once the agent serves")
            return
        self.handled += 1
        self._missed = False
        if self._keys is None:
            log.warning("SIGHUP ignored: the agent has no reload; restart it to apply a changed "
                        "config (sudo systemctl restart edge-agent@NAME)")
            return
        try:
            self._keys.reload()
        except Exception:  # never: reload keeps the old keys on any fault
            log.warning("SIGHUP: client keys not reloaded", exc_info=True)

    def close(self, timeout_s: float = 5.0) -> None:
        """Give SIGHUP back to the handler ``install`` replaced and end the thread (a reload
        under way is waited for up to ``timeout_s``)."""
        if self._installed:
            signal.signal(signal.SIGHUP, signal.SIG_DFL if self._previous is None
                          else self._previous)
            self._installed = False
        if self._wfd >= 0:  # again: nothing (a closed number may be another file's by now)
            wfd, self._wfd = self._wfd, -1  # the handler's write fails from now on: ignored
            os.close(wfd)  # the thread reads what is pending, then the end of the pipe
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if not self._thread.is_alive() and self._rfd >= 0:  # else a hung reload keeps it: the
            rfd, self._rfd = self._rfd, -1  # process's exit closes it
            os.close(rfd)

