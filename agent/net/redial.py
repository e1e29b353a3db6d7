"""Connections a peer refused at the handshake, dialled again.

libzmq reconnects a connection that dropped, but not one whose handshake failed: a CURVE
server that refused this node's key (not in its ``allowed_keys_dir``), or a mechanism that is
not the peer's (``security`` differs), ends that socket's connection for good. An operator who
then fixes the peer and restarts it would find this node still cut off from it until this node
was restarted too. ``Redial`` watches the handshake events of the DEALER and SUB each node
keeps per peer: a failed one is logged once (WARNING, naming the peer, its endpoint and what
to check) and the socket is disconnected and connected again every ``REDIAL_S`` until a
handshake succeeds.

A server key that is not the peer's (``peers[i].public_key`` stale after the peer was
re-keyed, or a peer whose key file's lines do not belong together) is another case: the peer
cannot decrypt this node's hello and closes the connection, which libzmq 4.3 reports to this
side only as a handshake that broke off (``NO_DETAIL``) and reconnects every 0.1-0.5 s for
ever. One broken-off handshake means nothing (a reset, a peer killed mid-handshake), so it is
left to libzmq; ``NO_DETAIL_IN_A_ROW`` of them with no success in between, under CURVE, are
taken for a wrong key: one WARNING naming the peer and where its key came from, and the
connection is cut and dialled again only every ``REDIAL_S`` (a handshake in vain ten times a
second helps nobody). A success resets the count, and reconnects a connection cut meanwhile.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Optional, Set, Tuple

import zmq

log = logging.getLogger("agent.net.transport")  # one of the transport's parts

REDIAL_S = 5.0  # a refused connection is tried again this long after the refusal
# broken-off handshakes in a row, with no success, taken for a wrong server key: one or two
# come from a reset or a peer restarting; five take libzmq 0.5-2.5 s of steady failures
NO_DETAIL_IN_A_ROW = 5
NO_DETAIL = int(getattr(zmq, "EVENT_HANDSHAKE_FAILED_NO_DETAIL", 0))
PROTOCOL = int(getattr(zmq, "EVENT_HANDSHAKE_FAILED_PROTOCOL", 0))
MECHANISM_MISMATCH = int(getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", 0x11000003))
# the failures libzmq ends a connection for (and why, under CURVE)
FAILED_EVENTS = {int(getattr(zmq, name)): why for name, why in (
    ("EVENT_HANDSHAKE_FAILED_AUTH", "this node's key is not in the peer's allowed_keys_dir"),
    ("EVENT_HANDSHAKE_FAILED_PROTOCOL", "the peer's key is not this node's "
                                        "peers[].public_key for it, or another protocol"))
    if hasattr(zmq, name)}
WATCHED = sum(FAILED_EVENTS) | int(zmq.EVENT_HANDSHAKE_SUCCEEDED) | NO_DETAIL


def mismatch(mode: str) -> str:
    """Why a handshake failed on a mechanism mismatch, for a node whose ``security`` is
    ``mode`` (the other side runs the other one)."""
    other = "none" if mode == "curve" else "CURVE"
    return ("security mismatch: this node runs security = \"%s\", the peer %s (every node of "
            "a fleet runs the same security)" % (mode, other))


class Redial:
    """Sockets to dial again: each with (peer, endpoint, when, cut by this watch).

    ``mode``: this node's ``security`` ("curve" or "none"); ``key_sources``: peer id -> where
    the public key this node holds for it came from (config field and value; public keys
    only), named in the wrong-key warning."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, mode: str = "curve",
                 key_sources: Optional[Dict[str, str]] = None):
        self.clock = clock
        self.mode = mode
        self.key_sources = dict(key_sources or {})
        self.due: Dict[Any, Tuple[str, str, float, bool]] = {}
        self._told: Set[Tuple[str, str]] = set()  # (peer, plane or "key") whose failure was logged
        self._broken: Dict[Any, int] = {}  # socket -> broken-off handshakes in a row
        # socket -> the numeric endpoint it was connected to (agent.net.peeraddr): dialled
        # again as it was, for libzmq never to resolve a name on its I/O thread
        self._dial: Dict[Any, str] = {}
        self.redials = 0  # connections dialled again so far

    def event(self, sock: Any, peer: str, plane: str, endpoint: str, event: int,
              value: int = 0, dial: str = "") -> None:
        """A handshake event of ``sock``'s connection to ``peer`` (``plane``: "data" or
        "control"; ``value``: the event's value, a protocol error's code): a failure schedules
        a redial, a success ends the watch's warning. ``endpoint`` is the configured one (what
        the warnings name); ``dial``, when given, the one ``sock`` was connected to."""
        if dial:
            self._dial[sock] = dial
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:  # up (again): nothing to dial, or to say
            self._told.discard((peer, plane))
            self._told.discard((peer, "key"))
            self._broken.pop(sock, None)
            entry = self.due.pop(sock, None)
            if entry is not None and entry[3]:  # this watch cut it after that success began
                self.due[sock] = entry[:2] + (self.clock(), True)
            return
        if event == NO_DETAIL and NO_DETAIL:
            self._broke_off(sock, peer, plane, endpoint)
            return
        why = FAILED_EVENTS.get(event)
        if why is None:
            return
        if event == PROTOCOL and value == MECHANISM_MISMATCH:
            why = mismatch(self.mode)
        elif self.mode != "curve":
            why = "protocol error %#x (is the peer an edge-agent of this version?)" % value
        self.due[sock] = (peer, endpoint, self.clock() + REDIAL_S, False)
        if (peer, plane) not in self._told:
            self._told.add((peer, plane))
            log.warning("%s connection to %s (%s) refused at the handshake: %s; dialling it "
                        "again every %.0f s", plane, peer, endpoint, why, REDIAL_S)

    def _broke_off(self, sock: Any, peer: str, plane: str, endpoint: str) -> None:
        """A broken-off handshake: counted; under CURVE, ``NO_DETAIL_IN_A_ROW`` of them cut the
        connection (libzmq would dial it again at once) and dial it every ``REDIAL_S``."""
        if self.mode != "curve":
            return
        n = self._broken[sock] = self._broken.get(sock, 0) + 1
        if n < NO_DETAIL_IN_A_ROW or sock in self.due:
            return
        try:
            sock.disconnect(self._dial.get(sock, endpoint))  # stops libzmq's own reconnects
        except zmq.ZMQError:
            pass
        self.due[sock] = (peer, endpoint, self.clock() + REDIAL_S, True)
        if (peer, "key") not in self._told:
            self._told.add((peer, "key"))
            log.warning("handshake with %s keeps failing (%d times in a row on the %s "
                        "connection, %s): the public key this node holds for it (%s) is "
                        "probably not %s's (a key rotated on %s, or its key file's lines do not "
                        "match): compare its fingerprint with what `edge-agent keys show` "
                        "prints for %s's NAME.key_secret; dialling it again every %.0f s",
                        peer, n, plane, endpoint,
                        self.key_sources.get(peer, "its peers[].public_key"), peer, peer, peer,
                        REDIAL_S)

    def moved(self, sock: Any, dial: str) -> None:
        """``sock`` now connects to ``dial`` (its name's address moved): dialled there again."""
        if sock in self._dial:
            self._dial[sock] = dial

    def run(self) -> None:
        """Dial again every socket whose time has come."""
        now = self.clock()
        for sock, (peer, endpoint, at, _) in list(self.due.items()):
            if at > now:
                continue
            del self.due[sock]
            dial = self._dial.get(sock, endpoint)
            try:
                sock.disconnect(dial)
            except zmq.ZMQError:  # libzmq already dropped the endpoint: connect is enough
                pass
            try:
                sock.connect(dial)
                self.redials += 1
            except zmq.ZMQError as exc:
                log.warning("cannot dial %s (%s) again: %s", peer, endpoint, exc)
