"""SIGHUP to a serving agent: a source re-reads its client keys; any other agent says and
ignores it.

A SIGHUP (a reload by habit, ``systemctl kill -s HUP``, a terminal hung up under a foreground
``run``) would end the agent at once, undrained and without saving its state, and systemd's
``Restart=on-failure`` takes a death by SIGHUP for a clean stop: the agent would stay down.
So it never ends the agent. A source with ``client_keys_dir`` reads that folder again
(``agent.net.clientkeys``): a client added or revoked there takes effect without a restart,
which would record the tasks still in flight after the drain as lost. Nothing else is
reloaded (the config is read once), so on any other agent the signal is logged and ignored.

The reload runs in the handler itself, on the main thread (the loop's) between two of its
steps: it reads a few small files and swaps one dict, and never raises.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

log = logging.getLogger("agent.run")  # a serving agent's own lines are logged under this name


def _said(*_: Any) -> None:
    log.warning("SIGHUP ignored: the agent has no reload; restart it to apply a changed config "
                "(sudo systemctl restart edge-agent@NAME)")


def handle_hangup(client_keys: Any = None) -> Any:
    """From now on (main thread only), SIGHUP reloads ``client_keys`` (a source's
    ``AllowedClients``: its ``reload`` logs what changed), or, without them, is logged and
    ignored; returns the handler it replaced."""
    if client_keys is None:
        return signal.signal(signal.SIGHUP, _said)

    def reload(*_: Any) -> None:
        try:
            client_keys.reload()
        except Exception:  # never: reload keeps the old keys on any fault; a signal must not kill
            log.warning("SIGHUP: client keys not reloaded", exc_info=True)
    return signal.signal(signal.SIGHUP, reload)
