"""Input refused as malformed, unexpected or from the wrong sender: counted, and logged.

Each such message is a drop counted by reason (``drop_<reason>``: stats.json, metrics,
``status``). The first is also logged as a WARNING naming its sender and what was wrong; later
ones at most once per ``REJECT_LOG_INTERVAL_S``, with how many more came meanwhile, by reason.
So an operator learns that something sends garbage, and who, without a flood in the journal.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from agent.ops.throttle import Throttle, more_since

log = logging.getLogger("agent.node.loop")  # the loop's step: logged under its name

REJECT_LOG_INTERVAL_S = 60.0  # at most one line per this many seconds about refused input


def sender_label(who: Any) -> str:
    """A sender for a log line: a node id as it is; a routing id that is not printable ASCII
    (a client's, ZeroMQ-made) in hex."""
    if isinstance(who, (bytes, bytearray)):
        text = bytes(who).decode("ascii", "replace")
        return text if text.isprintable() and "\ufffd" not in text else "0x" + bytes(who).hex()
    return str(who)


class Rejects:
    """``reject(reason, sender, why)``: count a drop through ``drop`` and log it (module
    docstring); ``why`` is the reason in words (default: the reason)."""

    def __init__(self, drop: Callable[[str], None], clock: Callable[[], float] = time.monotonic):
        self._drop = drop
        self._log = Throttle(REJECT_LOG_INTERVAL_S, clock)

    def __call__(self, reason: str, sender: Any, why: str = "") -> None:
        self._drop(reason)
        left = self._log.due(reason)
        if left is not None:
            log.warning("dropped a message from %s: %s%s", sender_label(sender), why or reason,
                        more_since(left, "more dropped"))
