"""Handshakes that fail on this node's bound sockets (ROUTER data, PUB control), told bounded.

A node that connects with a server key that is not this node's (its ``peers[].public_key``
for this node is stale after a re-key, or this node's key file's lines do not belong
together) fails every CURVE handshake: this side gets ``HANDSHAKE_FAILED_PROTOCOL``
(cryptographic error) and the ZAP allow-list never hears of it, since the hello cannot be
decrypted; a node of the other ``security`` mode fails it with a mechanism mismatch. The
connecting node retries every fraction of a second (every ``REDIAL_S`` once its own watch
notices), so ``ServerWatch`` logs the first failure at once and then at most one line per
``log_interval_s``, counting the failures in between by socket and cause: bounded whatever
connects. libzmq's monitor (version 1, the one pyzmq offers) names only this node's endpoint
the connection came in on, not the connecting node's address.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import zmq

from agent.net.keyfiles import key_fingerprint
from agent.net.redial import MECHANISM_MISMATCH, PROTOCOL, Redial, mismatch

log = logging.getLogger("agent.net.transport")  # one of the transport's parts

CRYPTOGRAPHIC = int(getattr(zmq, "PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC", 0x11000001))


def monitor(sock: zmq.Socket, events: int) -> zmq.Socket:
    """A monitor socket for ``events`` of ``sock`` (LINGER 0: closing it never blocks)."""
    mon = sock.get_monitor_socket(events)
    mon.setsockopt(zmq.LINGER, 0)
    return mon


def event_of(frames: Sequence[Any]) -> Tuple[int, int, str]:
    """(event, value, endpoint) of a monitor message; (0, 0, "") when unreadable."""
    try:
        head = frames[0].bytes
        where = frames[1].bytes.decode("utf-8", "replace") if len(frames) > 1 else ""
        return (int.from_bytes(head[:2], "little"), int.from_bytes(head[2:6], "little"), where)
    except (AttributeError, IndexError):
        return 0, 0, ""


class ServerWatch:
    """Failed handshakes on the bound sockets: the first logged at once, then at most one line
    per ``log_interval_s`` with the counts since the last."""

    def __init__(self, mode: str, node_id: str, public_key: Optional[bytes] = None,
                 log_interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.mode = mode
        self.node_id = node_id
        self.public_key = public_key  # this node's own (public: shown for comparison)
        self.log_interval_s = log_interval_s
        self.clock = clock
        self.failed = 0  # failed handshakes on the bound sockets so far
        self.pending: Dict[Tuple[str, str], int] = {}  # (socket, cause) -> count since the line
        self._logged_at: Optional[float] = None

    def event(self, plane: str, event: int, value: int, endpoint: str) -> None:
        """A monitor event of the bound socket of ``plane`` ("data" or "control")."""
        if event != PROTOCOL or not PROTOCOL:
            return
        self.failed += 1
        where = "%s socket %s" % (plane, endpoint) if endpoint else plane + " socket"
        key = (where, self._cause(value))
        if key in self.pending or len(self.pending) < 8:  # bounded: a few causes at most
            self.pending[key] = self.pending.get(key, 0) + 1
        self.flush()

    def _cause(self, value: int) -> str:
        if value == MECHANISM_MISMATCH:
            return mismatch(self.mode)
        if value == CRYPTOGRAPHIC and self.mode == "curve":
            own = " (%s)" % self.public_key.decode("ascii") if self.public_key else ""
            return ("the connecting node holds another public key for this node %r: its "
                    "peers[].public_key for %s is stale (this node re-keyed?), or this node's "
                    "key file's lines do not match; give it this node's public key%s"
                    % (self.node_id, self.node_id, own))
        return "ZMTP protocol error %#x (not an edge-agent of this version?)" % value

    def flush(self, force: bool = False) -> None:
        """Log the failures counted since the last line, once due (``force``: now)."""
        if not self.pending:
            return
        now = self.clock()
        if not force and self._logged_at is not None and \
                now - self._logged_at < self.log_interval_s:
            return
        for (where, cause), n in sorted(self.pending.items()):
            log.warning("handshake failed %d %stime(s) on this node's %s: %s", n,
                        "" if self._logged_at is None else "more ", where, cause)
        self.pending, self._logged_at = {}, now


def key_sources(peers: Sequence[Any], server_keys: Dict[str, bytes]) -> Dict[str, str]:
    """Peer id -> where the public key this node holds for it comes from, for a warning:
    ``peers[i].public_key`` and its file, and the key's fingerprint, never the key: one that
    keeps failing may be a secret pasted in its place."""
    out = {}
    for i, p in enumerate(peers):
        key = server_keys.get(p.id)
        held = "key %s" % key_fingerprint(key) if key else "none"
        spec = getattr(p, "public_key", "")
        inline = not spec or spec == (key or b"").decode("ascii", "replace")
        out[p.id] = ("peers[%d].public_key = %s" % (i, held) if inline else
                     "peers[%d].public_key = %s from %s" % (i, held, spec))
    return out



def watches(security: Any, node_id: str, peers: Sequence[Any],
            server_keys: Dict[str, bytes]) -> Tuple[Redial, ServerWatch]:
    """The transport's two handshake watches: its connecting sockets' (``Redial``) and its
    bound sockets' (``ServerWatch``), for the ``security`` object's mode."""
    mode = getattr(security, "name", "none")
    return (Redial(mode=mode, key_sources=key_sources(peers, server_keys)),
            ServerWatch(mode, node_id, getattr(security, "public_key", None)))
