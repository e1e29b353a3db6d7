"""Connections a peer refused at the handshake, dialled again.

libzmq reconnects a connection that dropped, but not one whose handshake failed: a CURVE
server that refused this node's key (not in its ``allowed_keys_dir``), or a server key that
is not the peer's (``peers[i].public_key`` stale), ends that socket's connection for good. An
operator who then fixes the peer's allow-list and restarts it would find this node still cut
off from it until this node was restarted too. ``Redial`` watches the handshake events of the
DEALER and SUB each node keeps per peer: a failed one is logged once (WARNING, naming the peer,
its endpoint and what to check) and the socket is disconnected and connected again every
``REDIAL_S`` until a handshake succeeds.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Set, Tuple

import zmq

log = logging.getLogger("agent.net.transport")  # one of the transport's parts

REDIAL_S = 5.0  # a refused connection is tried again this long after the refusal
# the failures libzmq ends a connection for; one that breaks off (NO_DETAIL: a reset, a peer
# killed mid-handshake) it reconnects by itself, so that one is left to it
FAILED_EVENTS = {int(getattr(zmq, name)): why for name, why in (
    ("EVENT_HANDSHAKE_FAILED_AUTH", "this node's key is not in the peer's allowed_keys_dir"),
    ("EVENT_HANDSHAKE_FAILED_PROTOCOL", "the peer's key is not this node's "
                                        "peers[].public_key for it, or another protocol"))
    if hasattr(zmq, name)}
WATCHED = sum(FAILED_EVENTS) | int(zmq.EVENT_HANDSHAKE_SUCCEEDED)


class Redial:
    """Sockets to dial again: each with (peer, endpoint, when)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.due: Dict[Any, Tuple[str, str, float]] = {}
        self._told: Set[Tuple[str, str]] = set()  # (peer, plane) whose failure was logged
        self.redials = 0  # connections dialled again so far

    def event(self, sock: Any, peer: str, plane: str, endpoint: str, event: int) -> None:
        """A handshake event of ``sock``'s connection to ``peer`` (``plane``: "data" or
        "control"): a failure schedules a redial, a success ends the watch's warning."""
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:  # up (again): nothing to dial, or to say
            self._told.discard((peer, plane))
            self.due.pop(sock, None)
            return
        why = FAILED_EVENTS.get(event)
        if why is None:
            return
        self.due[sock] = (peer, endpoint, self.clock() + REDIAL_S)
        if (peer, plane) not in self._told:
            self._told.add((peer, plane))
            log.warning("%s connection to %s (%s) refused at the handshake: %s; dialling it "
                        "again every %.0f s", plane, peer, endpoint, why, REDIAL_S)

    def run(self) -> None:
        """Dial again every socket whose time has come."""
        now = self.clock()
        for sock, (peer, endpoint, at) in list(self.due.items()):
            if at > now:
                continue
            del self.due[sock]
            try:
                sock.disconnect(endpoint)
            except zmq.ZMQError:  # libzmq already dropped the endpoint: connect is enough
                pass
            try:
                sock.connect(endpoint)
                self.redials += 1
            except zmq.ZMQError as exc:
                log.warning("cannot dial %s (%s) again: %s", peer, endpoint, exc)
