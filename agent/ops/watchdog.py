"""How often to feed systemd's watchdog: from ``WATCHDOG_USEC``, which systemd sets from the
unit's ``WatchdogSec=`` (with ``WATCHDOG_PID``, the process meant)."""

from __future__ import annotations

import os
from typing import Mapping

DEFAULT_INTERVAL_S = 1.0  # the main loop's ping period without a tighter watchdog


def watchdog_interval_s(environ: Mapping[str, str], default_s: float = DEFAULT_INTERVAL_S) -> float:
    """Half of ``WATCHDOG_USEC`` (systemd's advice), at most ``default_s``; ``default_s`` when
    it is unset, unreadable or meant for another process (``WATCHDOG_PID``)."""
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return default_s
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return default_s
    if usec <= 0:
        return default_s
    return min(default_s, usec / 2e6)
