"""Liveness options of the transport's sockets, and how long a data connection may be silent.

Every socket gets ZMTP heartbeats (a PING every ``HEARTBEAT_IVL_MS``), TCP keepalive, a TCP
user timeout, reconnects capped at ``RECONNECT_IVL_MAX_MS`` and a connect timeout
(``CONNECT_TIMEOUT_MS``) (``apply``). A connection with no traffic for its heartbeat timeout
is closed; so is one whose peer does not hear a PING within the TTL this side announces.

libzmq counts only a whole decoded message as traffic: a large frame still crossing the link
does not count, and a PING or PONG queues behind the message in flight. So on a link where
one message takes longer than ``HEARTBEAT_TIMEOUT_MS`` to cross, a fixed timeout closes the
connection mid-transfer, every time the message is sent again. A data socket's timeout
therefore grows with the time a message needs on its links (``link_timeout_ms``): a margin,
the outbox's queue bound (``QUEUE_BOUND_MS``: at most that much link time waits in front of a
message) and twice the largest message's bytes over the link's rate. A DEALER uses the
largest message on its peer's link, either way (a PONG or an ACK queues behind the tasks
crossing the other way too: one queue per link); the ROUTER, one socket for all peers, the
slowest link's (``data_timeouts``); a control socket the larger of its own default and the
link's (a heartbeat queues behind tasks alike). A link of unknown rate (0), or
with no large message, keeps ``HEARTBEAT_TIMEOUT_MS``, and a fast link gets a few ms more:
dead peers on fast links are still found within seconds. The outbox holds off a successor with
more than the larger of its queue bound and one message's link time queued, so one message
alone never fills a slow link: in front of a message wait at most max(bound, t) <= bound + t
for a message of link time t, within the timeout's bound + 2 t.

A node's loop declares a neighbour gone after ``neighbour_timeout_rounds`` heartbeat periods
without a control message. Behind a slow link those (or their TCP ACKs, one queue per link)
wait behind the tasks crossing it, so that silence grows by what the link's data timeout has
above ``HEARTBEAT_TIMEOUT_MS`` (``neighbour_timeout_s``); a fast link's stays within a few
ms of the configured one.

The sizes come from the node's view (``stage_sizes``): a task for stage h carries that
stage's input tensor (``stage_input_bytes``) and a header (``HEADER_ALLOWANCE_BYTES`` at
most); ACKs, results and control messages are small. A link's rate is the one configured for
this node -> the peer, which stands for the other way too.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, NamedTuple, Tuple

import zmq

HEARTBEAT_IVL_MS = 500  # ZMTP PING on an idle data connection
HEARTBEAT_TIMEOUT_MS = 1500  # no traffic at all for this long: the connection is closed
HEARTBEAT_TTL_MS = 3000  # the peer may close our connection after this long without a PING
# control connections (PUB/SUB) wait longer: a heartbeat may queue behind a busy link's tasks,
# and a dropped SUB connection loses the heartbeats sent meanwhile
CONTROL_HEARTBEAT_TIMEOUT_MS = 3000
TCP_USER_TIMEOUT_MS = 3000  # ZMQ_TCP_MAXRT: unacknowledged data this long closes the connection
RECONNECT_IVL_MS, RECONNECT_IVL_MAX_MS = 100, 500  # first retry and the cap of the backoff
CONNECT_TIMEOUT_MS = 1000  # a connect not done by then is abandoned and tried afresh
KEEPALIVE_IDLE_S, KEEPALIVE_INTVL_S, KEEPALIVE_CNT = 5, 1, 3  # TCP keepalive probes
# a link's timeout: this margin (a PING goes out up to one interval after the last traffic),
# plus the link time the outbox lets queue in front of a message (LINK_QUEUE_MAX_S), plus
# twice the message's own link time; on a fast link that is about HEARTBEAT_TIMEOUT_MS, which
# stays the least
MARGIN_MS = HEARTBEAT_IVL_MS
LINK_QUEUE_MAX_S = 1.0  # link time the outbox queues to a successor at most (agent.node.out_linkhold)
QUEUE_BOUND_MS = 1000.0 * LINK_QUEUE_MAX_S
HEADER_ALLOWANCE_BYTES = 2048  # a TASK header's bytes at most, beside its tensor
# ZMTP sends the TTL in a PING as 16-bit deciseconds: libzmq refuses a larger one
TTL_MAX_MS = 0xFFFF * 100


class StageSizes(NamedTuple):
    """What a node's data links carry: its own stages (first, last; (0, 0) for a source) and
    each stage's input tensor bytes (stage h at index h - 1)."""

    stages: Tuple[int, int] = (0, 0)
    input_bytes: Tuple[float, ...] = ()


def stage_sizes(view: Any) -> StageSizes:
    """The ``StageSizes`` of a node from its ``NodeView``."""
    return StageSizes((int(view.stage), int(max(view.stage, view.last_stage))),
                      tuple(float(b) for b in view.stage_input_bytes))


def link_timeout_ms(message_bytes: float, rate_bytes_s: float) -> int:
    """The heartbeat timeout of a connection over a link of ``rate_bytes_s`` (0: unknown)
    whose largest message is ``message_bytes`` (0: only small ones): ``HEARTBEAT_TIMEOUT_MS``,
    or more where the message with the queue in front of it needs longer to cross."""
    if rate_bytes_s <= 0 or message_bytes <= 0:
        return HEARTBEAT_TIMEOUT_MS
    need = MARGIN_MS + QUEUE_BOUND_MS + 2000.0 * message_bytes / rate_bytes_s
    return int(min(TTL_MAX_MS, max(HEARTBEAT_TIMEOUT_MS, math.ceil(need))))


def neighbour_timeout_s(base_s: float, link_ms: int) -> float:
    """How long a neighbour whose link has the heartbeat timeout ``link_ms``
    (``link_timeouts``) may be silent on the control plane before it counts as gone: the
    configured ``base_s`` plus what that timeout has above ``HEARTBEAT_TIMEOUT_MS`` (the link
    time its messages, either way, may hold a heartbeat up: twice the largest one's)."""
    return base_s + max(0, link_ms - HEARTBEAT_TIMEOUT_MS) / 1000.0


def _task_bytes(sizes: StageSizes, first: int, last: int) -> float:
    """The largest task message for a stage in first..last (0 when none is known)."""
    known = [sizes.input_bytes[h - 1] for h in range(max(first, 1), last + 1)
             if h - 1 < len(sizes.input_bytes)]
    return max(known) + HEADER_ALLOWANCE_BYTES if known else 0.0


def link_timeouts(peers: Iterable[Any], sizes: StageSizes) -> Dict[str, int]:
    """Each peer id's heartbeat timeout (milliseconds) for every connection to or from it.
    Its link carries the tasks this node sends it (for the stages it serves) and, from a
    peer serving earlier stages or a source, the tasks it sends this node; a PING or PONG
    either way queues behind the larger, so the larger decides."""
    first, _ = sizes.stages
    received = _task_bytes(sizes, *sizes.stages) if first > 0 else 0.0
    out = {}
    for p in peers:
        p_first, p_last = p.stages
        # what this node sends it: the inputs of its stages after this node's first (a
        # predecessor's own stages never cross to it from here)
        lo = max(p_first, first + 1)
        sent = _task_bytes(sizes, lo, p_last) if p_first > 0 and lo <= p_last else 0.0
        sends_us = first > 0 and (p_first == 0 or p_last < first)
        out[p.id] = link_timeout_ms(max(sent, received if sends_us else 0.0),
                                    float(p.link_rate_bytes_s or 0.0))
    return out


def data_timeouts(peers: Iterable[Any], sizes: StageSizes) -> Tuple[int, Dict[str, int]]:
    """(the ROUTER's timeout, each peer id's DEALER timeout), milliseconds: a DEALER's is its
    peer's link's (``link_timeouts``); the ROUTER, one socket for every peer's connection,
    waits as long as the slowest link needs."""
    links = link_timeouts(peers, sizes)
    return max([HEARTBEAT_TIMEOUT_MS] + list(links.values())), links


def apply(sock: zmq.Socket, timeout_ms: int = HEARTBEAT_TIMEOUT_MS,
          user_timeout: bool = True) -> None:
    """Heartbeats (silence for ``timeout_ms`` closes a connection; the TTL announced to the
    peer and the TCP user timeout grow with it), TCP keepalive, capped reconnects and a
    connect timeout on a socket; options this libzmq lacks are skipped.

    ``user_timeout`` False: no TCP user timeout (control sockets). Linux counts it from the
    first re-send of the oldest unacknowledged data, and a connection that always has a
    re-sent segment outstanding (a heartbeat every 0.5 s whose ACKs queue behind tasks on a
    slow link, so each times out) is cut although ACKs still arrive, without a word to the
    peer; the ZMTP heartbeat timeout, counted from what the peer last sent, still closes a
    connection that is really stalled."""
    # the TTL is the peer's own timeout for our PINGs, which queue behind our messages as its
    # PONGs queue behind its: at least the timeout (twice it, as the defaults have it)
    ttl = min(TTL_MAX_MS, max(HEARTBEAT_TTL_MS, 2 * timeout_ms))
    for name, value in (("HEARTBEAT_IVL", HEARTBEAT_IVL_MS),
                        ("HEARTBEAT_TIMEOUT", timeout_ms),
                        ("HEARTBEAT_TTL", ttl),
                        # unacknowledged bytes wait in a slow link's queue as long as a message
                        ("TCP_MAXRT", max(TCP_USER_TIMEOUT_MS, timeout_ms) if user_timeout
                         else 0),
                        ("RECONNECT_IVL", RECONNECT_IVL_MS),
                        ("RECONNECT_IVL_MAX", RECONNECT_IVL_MAX_MS),
                        ("CONNECT_TIMEOUT", CONNECT_TIMEOUT_MS),
                        ("TCP_KEEPALIVE", 1), ("TCP_KEEPALIVE_IDLE", KEEPALIVE_IDLE_S),
                        ("TCP_KEEPALIVE_INTVL", KEEPALIVE_INTVL_S),
                        ("TCP_KEEPALIVE_CNT", KEEPALIVE_CNT)):
        try:
            sock.setsockopt(getattr(zmq, name), value)
        except (AttributeError, zmq.ZMQError):  # not in this pyzmq, or this libzmq / platform
            pass
