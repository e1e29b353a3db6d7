"""SIGHUP to a serving agent: said and ignored.

A SIGHUP (a reload by habit, ``systemctl kill -s HUP``, a terminal hung up under a foreground
``run``) would end the agent at once, undrained and without saving its state, and systemd's
``Restart=on-failure`` takes a death by SIGHUP for a clean stop: the agent would stay down.
The agent has no reload (its config is read once), so the signal is logged and ignored.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

log = logging.getLogger("agent.run")  # a serving agent's own lines are logged under this name


def _said(*_: Any) -> None:
    log.warning("SIGHUP ignored: the agent has no reload; restart it to apply a changed config "
                "(sudo systemctl restart edge-agent@NAME)")


def ignore_hangup() -> Any:
    """Log and ignore SIGHUP from now on (main thread only); returns the handler it replaced."""
    return signal.signal(signal.SIGHUP, _said)
