"""ZeroMQ sockets of one agent: the control plane (PUB/SUB) and the data plane (DEALER->ROUTER).

- Control: this node binds one PUB; it keeps one SUB per peer, connected to that peer's PUB
  (under CURVE with that peer's server key) and subscribed to its own id's and the broadcast
  topic (``wire.topic``). Frames: [topic, header]. One SUB per peer: every control message is
  known to come from the peer whose PUB delivered it (the loop drops one whose ``from`` differs).
- Data: this node binds one ROUTER (tasks and results arrive there; ACKs go back through it)
  and keeps one DEALER per peer (ROUTING_ID = node id) to send tasks/results; the peer's ACKs
  come back on that DEALER. DEALERs use IMMEDIATE so a send to a dead peer fails at once
  instead of queueing, and the node re-sends elsewhere. A monitor on each DEALER reports a
  dropped connection (a peer process that died closes its sockets) as ``LINK_DOWN`` at once,
  so the node need not wait for the peer's heartbeats to stop.
- Liveness (``agent.net.liveness``, on every socket): ZMTP heartbeats (a PING every
  ``HEARTBEAT_IVL_MS``; no traffic for the timeout closes the connection, which a DEALER's
  monitor reports as ``LINK_DOWN``; a data socket's timeout grows with the time its slowest link
  needs for one message, from ``sizes``, else ``HEARTBEAT_TIMEOUT_MS``; a control socket's
  likewise, at least ``CONTROL_HEARTBEAT_TIMEOUT_MS``), TCP keepalive, on data sockets a TCP user
  timeout (unacknowledged data for ``TCP_USER_TIMEOUT_MS``, or a slow link's timeout, closes it;
  none on control sockets: ``liveness.apply``), reconnects capped at ``RECONNECT_IVL_MAX_MS`` and
  a connect timeout (``CONNECT_TIMEOUT_MS``: a SYN lost while the link was down is sent again by
  a fresh connect, not after TCP's 1-2-4 s backoff). A stalled connection (a link down, a peer
  stopped) is rebuilt as a fresh TCP connection instead of waiting out TCP's retransmission
  backoff, so data and heartbeats flow again soon after the link or the peer returns; the control
  plane needs it too (a node that cannot hear its successors thinks it has no route). A DEALER's
  monitor also reports each handshake done (``LINK_UP``); ``data_drops`` counts each peer's
  dropped data connections, so the outbox can tell whether a task went on the connection still
  up. Failed handshakes (a key refused or wrong, another ``security``) are told, bounded, and
  dialled again slowly (``agent.net.redial``; on the bound sockets ``agent.net.handshakes``).
- Every socket: LINGER 0 (a stop never blocks; at ``close`` the data sockets get a short,
  bounded linger so the last ACKs, answers and results go out: ``agent.net.transport_stop``),
  IPV6 only where its endpoint needs it
  (``agent.net.addrfamily``; ``bound``: what each bind took); a peer's sockets connect to
  the numeric address its name resolved to, never the name (``agent.net.peeraddr``: libzmq
  would resolve it on its I/O thread, stalling every socket), MAXMSGSIZE (twice
  ``max_message_bytes``, per frame: ZeroMQ disconnects a peer sending a larger one; the loop
  counts and drops a message above ``max_message_bytes``), the security object applied
  (``apply_server`` on bound sockets, ``apply_client`` with the peer's public key on the rest)
  -- except a source's client socket: CURVE with its own allow-list when client keys are
  given (read again on SIGHUP, each message's key checked: ``agent.net.clientkeys``), else
  plain and restricted by the config to ipc:// or loopback; its accepts watched at the
  open-file limit (``agent.net.acceptwatch``: a full table told, an ipc:// path held aside).

Identity: under CURVE the ZAP handler authenticates each DEALER that connects to the ROUTER
and sets the message property ``User-Id`` to its z85 public key; ``key_owners`` maps each
allowed key to one node id, and a data message whose routing id (the node id the DEALER claims)
is not that key's node is dropped here and counted in ``impersonations`` (the loop's
``drop_impersonation``); the loop checks the header's ``from`` against the routing id. So a
listed key can only ever speak as its own node.

The transport does no decoding and keeps no policy state: ``poll`` returns raw events and the
node loop decides; it also polls plain file descriptors the loop registers (the inference
thread's wake-up pipe), so there is exactly one poller.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import zmq

from agent.config.node import DEFAULT_MAX_MESSAGE_BYTES, Peer
from agent.net import acceptwatch, clientkeys, liveness, transport_stop
from agent.net.addrfamily import for_node
from agent.net.frames import recv_message, send_frames
from agent.net.handshakes import event_of, monitor, watches
from agent.net.peeraddr import Lookup, PeerAddresses
from agent.net.redial import PROTOCOL, WATCHED
from agent.net.security import NoSecurity, serve_clients_over_curve
from agent.net.twins import RUN_PROPERTY, Twins
from agent.protocol.wire import BROADCAST, topic

log = logging.getLogger(__name__)

# Event tags returned by Transport.poll
DATA = "data"  # (DATA, router identity bytes, frames) a task/result/junk at our ROUTER
REPLY = "reply"  # (REPLY, peer id, frames) an ACK (or junk) on the DEALER to that peer
CONTROL = "control"  # (CONTROL, peer id, frames) [topic, header] from that peer's PUB
CLIENT = "client"  # (CLIENT, identity, frames) a local client's request (source "client" mode)
FD = "fd"  # (FD, fd, None) a registered file descriptor is readable
LINK_DOWN = "link_down"  # (LINK_DOWN, peer id, None) the connection to its ROUTER dropped
LINK_UP = "link_up"  # (LINK_UP, peer id, None) a connection to its ROUTER is (again) up

_DRAIN = 256  # messages taken per socket per poll, so one busy socket cannot starve the rest
# plain ints: zmq's are enum flags, and ``&`` on those runs Python code (~2 us per message)
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
# liveness options and timeouts (agent.net.liveness); the loop reads the default timeout here
HEARTBEAT_TIMEOUT_MS = liveness.HEARTBEAT_TIMEOUT_MS
CONTROL_MS = liveness.CONTROL_HEARTBEAT_TIMEOUT_MS  # a control socket's, on fast links
stage_sizes = liveness.stage_sizes  # what a node sets ``Transport.sizes`` from


def handed_over(routing_id: bytes) -> bool:
    """True for the routing id ZeroMQ gives a peer's older connection when the peer connects
    again under its id (ROUTER_HANDOVER): five bytes, a zero byte and a counter. Messages
    still queued on it arrive under that id; node ids start with a letter or digit."""
    return len(routing_id) == 5 and routing_id[:1] == b"\x00"


class Transport:
    """The sockets of one node; not thread-safe (owned by the I/O loop's thread)."""

    def __init__(self, ctx: zmq.Context, node_id: str, control_bind: str, data_bind: str,
                 peers: Sequence[Peer], security: Any = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 client_bind: str = "", server_keys: Optional[Dict[str, bytes]] = None,
                 client_keys: Any = None, on_client_refused: Any = None,
                 key_owners: Optional[Dict[str, str]] = None, twins: Optional[Twins] = None,
                 lookup: Optional[Lookup] = None):
        self.ctx, self.node_id = ctx, node_id
        self.control_bind, self.data_bind, self.client_bind = control_bind, data_bind, client_bind
        self.peers = {p.id: p for p in peers}
        self.security = security if security is not None else NoSecurity()
        self.server_keys = dict(server_keys or {})  # peer id -> its CURVE public key
        self.max_message_bytes = max_message_bytes
        # clients' public keys: the client socket is a CURVE server (None: plain, local only)
        self.client_keys = client_keys  # a ClientKeys: each message's key checked (``tag``)
        self._tag = getattr(client_keys, "tag", None) or clientkeys.plain_id  # plain: no key
        self.accepts = acceptwatch.AcceptWatch(client_bind)  # the client socket's descriptors
        self.on_client_refused = on_client_refused
        # z85 public key -> the one node id it may speak as (empty: no CURVE, no check)
        self.key_owners = dict(key_owners or {})
        self.impersonations = 0  # data messages dropped: routing id is not the key's node
        self.stale_connections = 0  # ... or what a peer's replaced connection still carried
        # this process's run id, sent in each DEALER's handshake, and the watch over those that
        # arrive (two agents under one node id: agent.net.twins); None: neither
        self.twins = twins
        self._impostors: set = set()  # (key's node, claimed id) pairs logged once
        self.poller = zmq.Poller()
        self.pub: Optional[zmq.Socket] = None
        self.subs: Dict[str, zmq.Socket] = {}  # peer id -> SUB connected to its PUB
        self._sub_peer: Dict[zmq.Socket, str] = {}
        self.router: Optional[zmq.Socket] = None
        self.client: Optional[zmq.Socket] = None
        self.dealers: Dict[str, zmq.Socket] = {}
        self._dealer_peer: Dict[zmq.Socket, str] = {}
        self._monitors: Dict[zmq.Socket, str] = {}  # DEALER monitor -> peer id
        self.data_accepted = 0  # connections peers made to the data socket so far
        self._sub_monitors: Dict[zmq.Socket, str] = {}  # SUB monitor -> peer id
        self._bound: Dict[zmq.Socket, str] = {}  # ROUTER's, PUB's monitor -> "data", "control"
        self.bound: Dict[str, str] = {}  # "control", "data", "client" -> the endpoint bound
        self._ipv6: Dict[Tuple[str, bool], bool] = {}  # (endpoint, bind) -> its zmq.IPV6
        # peers' names -> addresses (``lookup``: the resolver, getaddrinfo when None)
        self.addrs = PeerAddresses(lookup) if lookup is not None else PeerAddresses()
        # connections refused at the handshake (or to a wrong key) dialled again; failures told
        self.redial, self.server_watch = watches(self.security, node_id, peers, self.server_keys)
        self.data_drops: Dict[str, int] = {}  # peer id -> its data connections dropped so far
        self._fds: List[int] = []
        self.replied_at = -math.inf  # monotonic time of the last reply on the data socket
        self._sockets: List[zmq.Socket] = []
        # what the data links carry (set by the node before ``open``; default: sizes unknown)
        self.sizes = liveness.StageSizes()
        # the ROUTER's heartbeat timeout and each peer's DEALER's (``open`` works them out)
        self.timeouts_ms: Tuple[int, Dict[str, int]] = (HEARTBEAT_TIMEOUT_MS, {})

    def _socket(self, kind: int, endpoint: str = "", bind: bool = False) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IPV6, int(self._ipv6.get((endpoint, bind), False)))
        # ZeroMQ cuts off (disconnects) a peer sending frames above twice the limit, so memory
        # stays bounded; messages between the limit and that reach the loop and are counted.
        s.setsockopt(zmq.MAXMSGSIZE, 2 * self.max_message_bytes + 65536)
        self._sockets.append(s)
        return s

    def open(self) -> None:
        """Bind PUB and ROUTER, connect SUB and DEALERs to every peer; raise zmq errors on bind."""
        self.security.start(self.ctx)
        self._ipv6 = for_node((self.control_bind, self.data_bind, self.client_bind),
                              self.peers.values(),  # names resolved at once, seconds at most
                              resolve=self.addrs.families)  # their addresses kept
        self.timeouts_ms = liveness.data_timeouts(self.peers.values(), self.sizes)
        self.pub = self._socket(zmq.PUB, self.control_bind, True)
        liveness.apply(self.pub, max(CONTROL_MS, self.timeouts_ms[0]), user_timeout=False)
        self.security.apply_server(self.pub)
        self._bind(self.pub, self.control_bind, "control", PROTOCOL)  # a node's key not ours
        self.router = self._socket(zmq.ROUTER, self.data_bind, True)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unknown identity -> error, counted
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted peer takes its id back
        liveness.apply(self.router, self.timeouts_ms[0])
        self.security.apply_server(self.router)
        # connections counted (``data_accepted``): none made is told (agent.node.reach)
        self._bind(self.router, self.data_bind, "data", zmq.EVENT_HANDSHAKE_SUCCEEDED | PROTOCOL)
        self.poller.register(self.router, zmq.POLLIN)
        if self.client_bind:
            # Plain when local (only ipc:// and loopback then: a camera on the device needs no
            # keys); with client keys a CURVE server. MANDATORY: a gone client's answer fails
            self.client = self._socket(zmq.ROUTER, self.client_bind, True)
            self.client.setsockopt(zmq.ROUTER_MANDATORY, 1)  # (counted, not dropped unseen)
            if self.client_keys is not None:  # clients from the network: CURVE, own allow-list
                serve_clients_over_curve(self.security, self.client, self.client_keys,
                                         self.on_client_refused)
            self.accepts.arm(self.client, self.poller)  # first: a client may connect at once
            self._bind(self.client, self.client_bind, "client")
            self.poller.register(self.client, zmq.POLLIN)
        for p in self.peers.values():
            self._connect_peer(p)

    def _bind(self, sock: zmq.Socket, endpoint: str, plane: str, events: int = 0) -> None:
        if events:  # the monitor (``_bound``) first: a local peer may connect at once
            mon = monitor(sock, events)
            self._bound[mon] = plane
            self.poller.register(mon, zmq.POLLIN)
        self.bound[plane] = acceptwatch.bind(sock, endpoint, plane)  # not over a live ipc://

    def _connect_peer(self, peer: Peer) -> None:
        # a SUB to its PUB (control), a DEALER to its ROUTER (data); CURVE server key: the peer's
        sub = self._socket(zmq.SUB, peer.control_address)
        sub.setsockopt(zmq.SUBSCRIBE, topic(self.node_id))
        sub.setsockopt(zmq.SUBSCRIBE, topic(BROADCAST))
        liveness.apply(sub, max(CONTROL_MS, self.timeouts_ms[1].get(peer.id, 0)),
                       user_timeout=False)
        self.security.apply_client(sub, self.server_keys.get(peer.id))
        if self.security.name == "curve":  # a refused key: dialled again (redial)
            smon = monitor(sub, WATCHED)
            self._sub_monitors[smon] = peer.id
            self.poller.register(smon, zmq.POLLIN)
        self.addrs.connect(sub, (peer.id, "control"), peer.control_address)  # not a name
        self.subs[peer.id] = sub
        self._sub_peer[sub] = peer.id
        self.poller.register(sub, zmq.POLLIN)
        d = self._socket(zmq.DEALER, peer.data_address)
        d.setsockopt(zmq.ROUTING_ID, self.node_id.encode("utf-8"))
        if self.twins is not None:
            try:
                d.setsockopt(zmq.METADATA, ("%s:%s" % (RUN_PROPERTY, self.twins.run_id)).encode())
            except (AttributeError, zmq.ZMQError):  # a libzmq before 4.3: not watched
                pass
        d.setsockopt(zmq.IMMEDIATE, 1)
        liveness.apply(d, self.timeouts_ms[1].get(peer.id, HEARTBEAT_TIMEOUT_MS))
        self.security.apply_client(d, self.server_keys.get(peer.id))
        # the monitor first: a local peer's handshake can be over before connect() returns
        mon = monitor(d, zmq.EVENT_DISCONNECTED | WATCHED)
        self._monitors[mon] = peer.id
        self.poller.register(mon, zmq.POLLIN)
        self.addrs.connect(d, (peer.id, "data"), peer.data_address)  # not a name
        self.dealers[peer.id] = d
        self._dealer_peer[d] = peer.id
        self.poller.register(d, zmq.POLLIN)

    def register_fd(self, fd: int) -> None:
        """Poll a plain file descriptor for readability alongside the sockets."""
        self._fds.append(fd)
        self.poller.register(fd, zmq.POLLIN)

    def poll(self, timeout_s: float) -> List[Tuple[str, Any, Any]]:
        """Wait up to ``timeout_s`` for input; return the events (possibly none)."""
        # Round up: a timer due in 0.4 ms must not turn into a zero timeout and a spinning loop.
        if self.redial.due:
            self.redial.run()
        if self.server_watch.pending:  # failures counted since the last line, once due
            self.server_watch.flush()
        if self.addrs.waiting:  # names not resolved at open: resolved again off this thread
            self.addrs.retry()
        if self.addrs.named:  # names dialled: resolved again now and then, for a moved address
            self.addrs.refresh(lambda key, sock, old, new: self.redial.moved(sock, new))
        self.accepts.tick()  # descriptors counted: a full table told, an ipc:// path aside
        ready = self.poller.poll(max(0, int(math.ceil(timeout_s * 1000))))
        events: List[Tuple[str, Any, Any]] = []
        watched: set = set()  # senders whose run id this call has read: once per call is enough
        for sock_or_fd, _ in ready:
            if isinstance(sock_or_fd, int):
                events.append((FD, sock_or_fd, None))
                continue
            for i in range(_DRAIN):
                # After the first message, ask ZeroMQ whether more is queued instead of letting
                # a recv fail with EAGAIN (an exception per poll costs more than the check).
                if i and not sock_or_fd.getsockopt(_EVENTS) & _POLLIN:
                    break
                try:
                    frames = recv_message(sock_or_fd)  # a junk message's frames bounded
                except zmq.Again:
                    break
                if sock_or_fd in self._monitors:
                    peer = self._monitors[sock_or_fd]
                    event, value, _ = event_of(frames)
                    self.redial.event(self.dealers[peer], peer, "data",
                                      self.peers[peer].data_address, event, value,
                                      self.addrs.dialled.get((peer, "data"), ""))
                    if event == zmq.EVENT_DISCONNECTED:
                        self.data_drops[peer] = self.data_drops.get(peer, 0) + 1
                        events.append((LINK_DOWN, peer, None))
                    elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                        events.append((LINK_UP, peer, None))
                elif sock_or_fd in self._sub_monitors:
                    peer = self._sub_monitors[sock_or_fd]
                    event, value, _ = event_of(frames)
                    self.redial.event(self.subs[peer], peer, "control",
                                      self.peers[peer].control_address, event, value,
                                      self.addrs.dialled.get((peer, "control"), ""))
                elif sock_or_fd in self._bound:
                    event, value, where = event_of(frames)
                    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:  # a peer connected to this node
                        self.data_accepted += 1
                    else:  # a connecting node failed the handshake (key, mode)
                        self.server_watch.event(self._bound[sock_or_fd], event, value, where)
                elif sock_or_fd is self.router:
                    if self.key_owners and not self._own_key(frames):
                        continue
                    sender = frames[0].bytes
                    if self.twins is not None and sender not in watched:
                        watched.add(sender)
                        self._watch(sender, frames[-1])
                    events.append((DATA, sender, frames[1:]))
                elif sock_or_fd in self._sub_peer:
                    events.append((CONTROL, self._sub_peer[sock_or_fd], frames))
                elif sock_or_fd is self.client:  # a ClientId (net.clientkeys)
                    events.append((CLIENT, self._tag(frames), frames[1:]))
                elif sock_or_fd is self.accepts.mon:
                    self.accepts.event(frames)
                else:
                    events.append((REPLY, self._dealer_peer[sock_or_fd], frames))
        return events

    def _watch(self, sender: bytes, frame: Any) -> None:
        """Hand the run id and host a data message came with to the twins watch."""
        try:  # a run id not UTF-8 (any sender may set one) would raise out of ``poll``
            run = frame.get(RUN_PROPERTY)
        except (zmq.ZMQError, AttributeError, UnicodeDecodeError):  # none: an older version
            return
        try:
            host = frame.get("Peer-Address")
        except (zmq.ZMQError, AttributeError):  # ipc:// has none
            host = ""
        self.twins.observe(sender.decode("utf-8", "replace"), run, host)

    def _own_key(self, frames: Sequence[Any]) -> bool:
        """True when the routing id names the node the authenticated key belongs to."""
        try:
            owner = self.key_owners.get(frames[-1].get("User-Id"))
        except (zmq.ZMQError, AttributeError, IndexError):  # no ZAP property on this message
            owner = None
        claimed = frames[0].bytes
        if owner is not None and claimed == owner.encode("utf-8"):
            return True
        if owner is not None and handed_over(claimed):  # the owner's own older connection
            self.stale_connections += 1
            return False
        self.impersonations += 1
        if (owner, claimed) not in self._impostors and len(self._impostors) < 100:
            self._impostors.add((owner, claimed))  # once per pair: a flood logs nothing new
            log.warning("dropped data from the key of %s speaking as %r (a NAME.key file in "
                        "allowed_keys_dir must be named after its node id)",
                        "node %r" % owner if owner else "no known node", claimed)
        return False

    def publish(self, dest: str, frames: Sequence[Any]) -> None:
        """Publish [topic(dest), frames...] on the control plane (dest = node id or BROADCAST)."""
        try:
            send_frames(self.pub, [topic(dest)] + list(frames))
        except zmq.Again:  # PUB drops at its HWM anyway; control messages repeat every round
            pass

    def send(self, peer_id: str, frames: Sequence[Any]) -> bool:
        """Send frames to a peer's ROUTER; False when it cannot be sent now (not connected, full)."""
        d = self.dealers.get(peer_id)
        if d is None:
            return False
        try:
            send_frames(d, frames)
        except zmq.Again:
            return False
        return True

    def reply(self, identity: bytes, frames: Sequence[Any], client: bool = False) -> bool:
        """Send frames back through the ROUTER to ``identity``; False if it is gone."""
        sock = self.client if client else self.router
        try:
            send_frames(sock, [bytes(identity)] + list(frames))  # ClientId: as bytes
        except (zmq.Again, zmq.ZMQError):  # EHOSTUNREACH: the peer disconnected meanwhile
            return False
        if not client:  # a peer's DEALER must read it before ``close`` (transport_stop)
            self.replied_at = time.monotonic()
        return True

    def close(self) -> None:
        """Close every socket and stop the security object, after the peers had a moment to read
        the last ACKs, and with a bounded linger on the data sockets (``transport_stop``)."""
        transport_stop.settle(self.replied_at)
        watched = [self.subs[p] for p in self._sub_monitors.values() if p in self.subs]
        watched += [s for s in (self.router, self.pub) if s is not None]
        for d in list(self.dealers.values()) + watched:
            try:
                d.disable_monitor()
            except zmq.ZMQError:
                pass
        for mon in list(self._monitors) + list(self._sub_monitors) + list(self._bound):
            mon.close(linger=0)
        self._monitors, self._sub_monitors, self._bound = {}, {}, {}
        self.server_watch.flush(force=True)
        self.accepts.close()
        data = [s for s in (self.router, self.client) if s is not None]
        data += list(self.dealers.values())  # ACKs, answers, results, tasks: a bounded linger
        transport_stop.close_sockets(self._sockets, data, transport_stop.STOP_LINGER_MS)
        self._sockets = []
        self.dealers = {}
        self.security.stop()
