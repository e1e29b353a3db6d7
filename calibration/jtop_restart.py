"""A calibration run through a restart of jetson-stats' jtop service.

The service restarts when jetson-stats is upgraded (apt) or when systemd restarts it after a
crash (``Restart=on-failure``); it answers again within seconds. A run that loses its
connection (``jtop_adapter.ConnectionLost``) while it switches to or measures a mode waits for
the service -- at most ``--switch-timeout`` seconds, the bound it already gives the board for a
mode to become active -- opens a new connection, logs one line, and does that mode again from
its switch: the board may have been left in another mode, and a measurement the restart cut
(its readings stopped at the loss) is dropped, never written. A mode is done again at most
``RESTARTS_PER_MODE`` times, so a service that keeps going away ends the run as a lost one did
(one line, exit 1, the original mode restored); so does one not back within the bound, and a
restart during a ``--modes current`` run, which switches nothing and so cannot put the mode back.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional, TypeVar

from calibration import jtop_adapter
from calibration.jtop_adapter import ConnectionLost, JetsonDevice, JtopUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

# how often one mode is done again after the service went away during it
RESTARTS_PER_MODE = 1
# seconds between tries to reach the restarting service (each try starts a jtop client, whose
# start-up runs dpkg and ldconfig: not every few milliseconds)
RETRY_S = 1.0


def wait_for_service(
    connect: Callable[[], T],
    lost: JtopUnavailable,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    check: Optional[Callable[[], None]] = None,
    retry_s: float = RETRY_S,
) -> T:
    """``connect()``'s result once it succeeds, tried every ``retry_s`` seconds for at most
    ``timeout_s`` seconds after the connection was ``lost``; then JtopUnavailable: ``lost``'s
    line, the bound and the last try's error. ``check`` is called before each try (it may
    raise: a pending SIGTERM ends the wait)."""
    deadline = clock() + timeout_s
    last = "no try"
    while True:
        if check is not None:
            check()
        try:
            return connect()
        except Exception as exc:  # a service still starting fails in many ways: try again
            last = " ".join(str(exc).split()) or type(exc).__name__
        left = deadline - clock()
        if left <= 0:
            raise JtopUnavailable("%s, and the jtop service did not answer again within %.0f s "
                                  "(--switch-timeout; last try: %s)" % (lost, timeout_s, last))
        sleep(min(retry_s, left))


class JtopSession:
    """The run's connection to the jtop service (``jtop_adapter.open_device``): ``device``
    after ``open()``; ``reopen()`` replaces it after the service restarted."""

    def __init__(self, jtop_module: Any = None, interval_s: float = 0.5) -> None:
        self.jtop_module = jtop_module
        self.interval_s = interval_s
        self.device: Optional[JetsonDevice] = None
        self._opened: Any = None  # the open_device context of ``device``

    def open(self) -> JetsonDevice:
        """Connect; JtopUnavailable (with ``open_device``'s line) when the service cannot be
        used."""
        opened = jtop_adapter.open_device(self.jtop_module, self.interval_s)
        self.device = opened.__enter__()
        self._opened = opened
        return self.device

    def close(self) -> None:
        """Close the connection (one that broke too: its client's threads end)."""
        opened, self._opened = self._opened, None
        if opened is not None:
            opened.__exit__(None, None, None)

    def reopen(self, lost: JtopUnavailable, timeout_s: float,
               check: Optional[Callable[[], None]] = None) -> JetsonDevice:
        """A new connection once the service answers again (``wait_for_service``)."""
        self.close()
        return wait_for_service(self.open, lost, timeout_s, check=check)

    def __enter__(self) -> "JtopSession":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def through_restarts(
    session: JtopSession,
    attempt: Callable[[], T],
    what: str,
    timeout_s: float,
    reconnected: Callable[[JetsonDevice], None] = lambda device: None,
    check: Optional[Callable[[], None]] = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``attempt()``'s result; where it loses the connection (ConnectionLost), the service is
    waited for (``session.reopen``, at most ``timeout_s``), ``reconnected`` is given the new
    device, one line says so (``what``: what was being done, e.g. "calibrating power mode
    MAXN (id 0)") and ``attempt()`` runs again, ``RESTARTS_PER_MODE`` times at most; then the loss
    is raised. What else ``attempt`` raises passes through."""
    restarts = 0
    while True:
        try:
            return attempt()
        except ConnectionLost as exc:
            if restarts >= RESTARTS_PER_MODE:
                raise
            restarts += 1
            began = clock()
            device = session.reopen(exc, timeout_s, check)
            reconnected(device)
            logger.warning("%s while %s; the jtop service answered again after %.1f s: "
                           "reconnected, starting that over (a measurement the restart cut is "
                           "dropped)", exc, what, clock() - began)
