"""Input refused as malformed, unexpected or from the wrong sender: counted, and logged.

Each such message is a drop counted by reason (``drop_<reason>``: stats.json, metrics,
``status``). The first of each reason from each sender is also logged at once as a WARNING
naming its sender and what was wrong (for the first ``FIRST_PAIRS`` such pairs); later ones
at most once per ``REJECT_LOG_INTERVAL_S``, with how many more came meanwhile, by reason (the
pairs are forgotten every ``FIRST_PAIRS_FORGET_S``: a sender still at it is named again). What
was wrong is shown as one printable line of at most ``text.DETAIL_MAX_CHARS`` characters,
whatever the message quoted (a header may hold 64 KiB of escape codes and newlines). So
an operator learns that something sends garbage, and every sender that does (three peers of
an older wire protocol are three lines, not one a minute), without a flood in the journal.

A sender is a node id. A connection that gives none (a source's clients, whose routing ids
ZeroMQ makes afresh for each connection; anything not an agent on the data socket) is one
sender, ``ANONYMOUS``, however many connections it makes: named by its random routing id, each
new connection took a fresh first line (30 bad inputs over 30 connections were 30 lines in a
tenth of a second, each naming an id nobody can look up). Every client's routing id comes as
an ``agent.net.clientkeys.ClientId``: one without a key's name (a plain client socket) is
``ANONYMOUS`` whatever id the client set itself (one that called itself ``w1`` was named as
if worker w1 sent it, and 40 clients of 40 ids were 40 lines); a client of a CURVE client
socket is named by its key, ``client NAME`` (its ``NAME.key`` in ``client_keys_dir``): one
sender per key, however many connections it makes.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional, Set, Tuple

from agent.net.clientkeys import ClientId
from agent.ops.throttle import Throttle, more_since
from agent.protocol.text import printable

log = logging.getLogger("agent.node.loop")  # the loop's step: logged under its name

REJECT_LOG_INTERVAL_S = 60.0  # at most one line per this many seconds about refused input
FIRST_PAIRS = 64  # (reason, sender) pairs whose first drop is logged at once: a bound on lines
# ... forgotten this often, so senders of many names filling the set do not keep a later peer
# of another wire protocol from being named for the rest of the process
FIRST_PAIRS_FORGET_S = 3600.0
ANONYMOUS = "a client"  # the one sender of every connection without a node id


def sender_label(who: Any) -> str:
    """A sender for a log line: a node id as it is; a client whose key has a name ``client
    NAME``; any other client (a ``ClientId``, whatever routing id it set) and a routing id that
    is no node id (empty, or not printable ASCII: ZeroMQ makes a client's from a zero byte and
    a counter) ``ANONYMOUS``."""
    name = getattr(who, "key_name", "")
    if name:  # a file's name: shown as it is only when printable
        return "client " + (name if name.isprintable() else ascii(name))
    if isinstance(who, ClientId):  # a client's own routing id names nobody we know
        return ANONYMOUS
    if isinstance(who, (bytes, bytearray)):
        text = bytes(who).decode("ascii", "replace")
        named = text.isprintable() and "\ufffd" not in text
        return text if named and text else ANONYMOUS
    return str(who)


class Rejects:
    """``reject(reason, sender, why)``: count a drop through ``drop`` and log it (module
    docstring); ``why`` is the reason in words (default: the reason)."""

    def __init__(self, drop: Callable[[str], None], clock: Callable[[], float] = time.monotonic):
        self._drop = drop
        self.clock = clock
        self._log = Throttle(REJECT_LOG_INTERVAL_S, clock)
        self._seen: Set[Tuple[str, str]] = set()  # (reason, sender) pairs logged once
        self._seen_since: Optional[float] = None  # the first call's (the clock may come later)

    def __call__(self, reason: str, sender: Any, why: str = "") -> None:
        self._drop(reason)
        who = sender_label(sender)
        now = self.clock()
        if self._seen_since is None or now - self._seen_since >= FIRST_PAIRS_FORGET_S:
            self._seen, self._seen_since = set(), now
        # ``why`` quotes what came: cut and cleaned only when logged (a flood costs no more);
        # uncut, a heartbeat role of escape codes and newlines reached the journal as it was
        if (reason, who) not in self._seen and len(self._seen) < FIRST_PAIRS:
            self._seen.add((reason, who))
            log.warning("dropped a message from %s: %s", who, printable(why or reason))
            self._log.mark()
            return
        left = self._log.due(reason)
        if left is not None:
            log.warning("dropped a message from %s: %s%s", who, printable(why or reason),
                        more_since(left, "more dropped"))

