"""A delay line in user space, for kernels without ``sch_netem``: an NFQUEUE client.

An iptables rule in a device's namespace (``OUTPUT -d <peer> -j NFQUEUE --queue-num N``) hands
every packet that device sends to a peer to queue N; this process, started in the same
namespace, holds each packet for the queue's delay and then accepts it. A queue serves one
link and so has one delay: packets leave in the order they came, and one batch verdict
(``NFQNL_MSG_VERDICT_BATCH``: every id up to the given one) releases all that are due.
Only the packets' metadata is copied to user space (``NFQNL_COPY_META``).

It speaks netfilter's netlink protocol directly (``linux/netfilter/nfnetlink_queue.h``), so it
needs no library, only the kernel's ``nfnetlink_queue`` and the ``iptables`` command for the
rule. Message building and parsing are pure functions (tested on what the kernel sent); ``Shim``
is the socket loop. ``python -m agent.testbed.delayshim --queue 11=50`` binds queue 11 with a
50 ms delay, prints ``ready`` once every queue is bound (rules must come after: a packet sent to
an unbound queue is dropped) and runs until SIGTERM, then prints its counters.
"""

from __future__ import annotations

import argparse
import collections
import errno
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Deque, Dict, Iterator, List, Optional, Sequence, Tuple

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 2, 3
NFQA_PACKET_HDR = 1  # in a packet message: packet id, hw protocol, hook
NFQA_VERDICT_HDR = 2  # in a verdict: verdict, id
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND, NFQNL_COPY_META = 1, 1
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NLMSG_HDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
QUEUE_MAXLEN = 65536  # packets the kernel may hold for one queue before it drops
RCVBUF_BYTES = 8 << 20  # the socket's receive buffer: packet notices waiting to be read


class ShimError(RuntimeError):
    """The kernel refused a queue (the message names the queue and the error)."""


def _attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def message(msg: int, queue: int, attrs: bytes, seq: int = 0, flags: int = NLM_F_REQUEST) -> bytes:
    """A nfnetlink queue message: netlink header, nfgenmsg (family unspecified, version 0,
    resource id = the queue number, big-endian), attributes."""
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", queue) + attrs
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags,
                          seq, 0) + body


def bind_message(queue: int, seq: int) -> bytes:
    """Bind ``queue`` to this socket, metadata only, with a long queue; the kernel ACKs it."""
    attrs = (_attr(NFQA_CFG_CMD, struct.pack("=BB", NFQNL_CFG_CMD_BIND, 0)
                   + struct.pack("!H", socket.AF_INET))
             + _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
             + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)))
    return message(NFQNL_MSG_CONFIG, queue, attrs, seq, NLM_F_REQUEST | NLM_F_ACK)


def accept_through(queue: int, packet_id: int) -> bytes:
    """Accept every packet of ``queue`` up to and including ``packet_id``."""
    return message(NFQNL_MSG_VERDICT_BATCH, queue,
                   _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id)))


def parse(data: bytes) -> Iterator[Tuple[str, int, int]]:
    """The messages in one netlink datagram: ("packet", queue, packet id) for a queued packet,
    ("error", sequence, errno) for an ACK or error (errno 0: success); others skipped."""
    off = 0
    while off + NLMSG_HDR.size <= len(data):
        length, kind, _flags, seq, _pid = NLMSG_HDR.unpack_from(data, off)
        if length < NLMSG_HDR.size or off + length > len(data):
            return  # truncated: nothing more to read in this datagram
        body = data[off + NLMSG_HDR.size:off + length]
        if kind == NLMSG_ERROR and len(body) >= 4:
            yield "error", seq, -struct.unpack_from("=i", body)[0]
        elif kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET and len(body) >= 4:
            queue = struct.unpack_from("!H", body, 2)[0]
            packet_id = _packet_id(body[4:])
            if packet_id is not None:
                yield "packet", queue, packet_id
        off += (length + 3) & ~3


def _packet_id(attrs: bytes) -> Optional[int]:
    off = 0
    while off + 4 <= len(attrs):
        length, kind = struct.unpack_from("=HH", attrs, off)
        if length < 4:
            return None
        if kind & 0x3FFF == NFQA_PACKET_HDR and length >= 8:
            return struct.unpack_from("!I", attrs, off + 4)[0]
        off += (length + 3) & ~3
    return None


class DelayLine:
    """What is held, per queue, and when it is due; no socket (``Shim`` feeds it)."""

    def __init__(self, delays_s: Dict[int, float]):
        self.delays_s = dict(delays_s)  # queue number -> delay, seconds
        self.held: Dict[int, Deque[Tuple[float, int]]] = {
            q: collections.deque() for q in self.delays_s}  # (release time, packet id)
        self.counts = {"packets": 0, "released": 0, "overruns": 0}

    def on_datagram(self, data: bytes, now: float) -> None:
        """Hold the packets a datagram announces (other queues' and other messages ignored)."""
        for kind, queue, packet_id in parse(data):
            if kind == "packet" and queue in self.held:
                self.held[queue].append((now + self.delays_s[queue], packet_id))
                self.counts["packets"] += 1

    def due(self, now: float) -> List[Tuple[int, int, int]]:
        """Pop what is due: (queue, last packet id due, packets) per queue with any."""
        out = []
        for q, held in self.held.items():
            n, last = 0, None
            while held and held[0][0] <= now:
                last = held.popleft()[1]
                n += 1
            if n:
                out.append((q, last, n))
                self.counts["released"] += n
        return out

    def next_release(self) -> Optional[float]:
        """When the next held packet is due (None: nothing held)."""
        heads = [h[0][0] for h in self.held.values() if h]
        return min(heads) if heads else None


class Shim:
    """The netlink socket loop around a ``DelayLine`` (module docstring)."""

    def __init__(self, delays_s: Dict[int, float], clock=time.monotonic):
        self.line = DelayLine(delays_s)
        self.clock = clock
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            try:  # FORCE (root) goes past rmem_max; otherwise as much as allowed
                self.sock.setsockopt(socket.SOL_SOCKET, opt, RCVBUF_BYTES)
                break
            except OSError:
                continue
        self.sock.bind((0, 0))

    def bind(self) -> None:
        """Bind every queue; ``ShimError`` when the kernel refuses one."""
        for seq, q in enumerate(sorted(self.line.delays_s), start=1):
            self.sock.send(bind_message(q, seq))
            while True:
                got = [m for m in parse(self.sock.recv(65536)) if m[0] == "error"]
                if any(m[1] == seq for m in got):
                    err = [m[2] for m in got if m[1] == seq][0]
                    if err:
                        raise ShimError("NFQUEUE %d: %s" % (q, errno.errorcode.get(err, err)))
                    break

    def serve(self, running=lambda: True) -> None:
        """The loop: read notices, release what is due, sleep until the next event."""
        self.sock.setblocking(False)
        while running():
            nxt = self.line.next_release()
            wait = 0.5 if nxt is None else max(0.0, nxt - self.clock())
            try:
                readable, _, _ = select.select([self.sock], [], [], wait)
            except InterruptedError:
                continue
            if readable:
                self._drain(self.clock())
            for q, last, _n in self.line.due(self.clock()):
                self.sock.send(accept_through(q, last))

    def _drain(self, now: float) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped notices: count, go on
                    self.line.counts["overruns"] += 1
                    continue
                raise
            self.line.on_datagram(data, now)


def rule(ns: str, dst_ip: str, queue: int) -> List[str]:
    """The iptables command (inside namespace ``ns``) that hands what it sends to ``dst_ip``
    to ``queue``."""
    return ["ip", "netns", "exec", ns, "iptables", "-w", "-A", "OUTPUT", "-d", dst_ip + "/32",
            "-j", "NFQUEUE", "--queue-num", str(queue)]


def start(ns: str, delays_ms: Dict[int, float], timeout_s: float = 20.0) -> subprocess.Popen:
    """Start a shim in namespace ``ns`` for {queue: delay ms} and wait until its queues are
    bound; ``ShimError`` with its own message when it does not get there."""
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "agent.testbed.delayshim"]
    for q, ms in sorted(delays_ms.items()):
        cmd += ["--queue", "%d=%g" % (q, ms)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline().decode("utf-8", "replace").strip() if ready else ""
    if line != "ready":
        proc.kill()
        err = proc.communicate()[1].decode("utf-8", "replace").strip()
        raise ShimError(err.splitlines()[-1] if err else
                        "the delay shim in %s did not start within %g s" % (ns, timeout_s))
    return proc


def support_problem() -> Optional[str]:
    """Why the shim cannot delay packets here (None: it can): it needs ``iptables`` and the
    kernel's nfnetlink_queue (a queue is bound in a scratch namespace to find out)."""
    if shutil.which("iptables") is None:
        return "iptables not found (Debian package iptables)"
    ns = "eashim%d-probe" % os.getpid()
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
        start(ns, {1: 0.0}).kill()
        subprocess.run(rule(ns, "127.0.0.2", 1), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=20)
    except (OSError, ShimError, subprocess.SubprocessError) as exc:
        err = getattr(exc, "stderr", None)
        return "NFQUEUE not usable here (%s)" % (
            err.decode("utf-8", "replace").strip() if err else exc)
    finally:
        subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return None


def parse_queues(items: Sequence[str]) -> Dict[int, float]:
    """``["11=50", "12=7.5"]`` -> {queue: delay in seconds}; ``ValueError`` naming a bad item."""
    out = {}
    for item in items:
        q, sep, ms = item.partition("=")
        try:
            queue, delay_ms = int(q), float(ms)
        except ValueError:
            queue, delay_ms = -1, -1.0
        if not sep or not 0 <= queue <= 65535 or not delay_ms >= 0:
            raise ValueError("--queue %r: expected QUEUE=DELAY_MS, e.g. 11=50" % item)
        out[queue] = delay_ms / 1000.0
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.testbed.delayshim",
                                 description="hold NFQUEUE packets for a fixed delay")
    ap.add_argument("--queue", action="append", required=True, metavar="N=DELAY_MS")
    args = ap.parse_args(argv)
    try:
        delays = parse_queues(args.queue)
        shim = Shim(delays)
        shim.bind()
    except (ValueError, OSError, ShimError) as exc:
        print("delayshim: %s" % exc, file=sys.stderr)
        return 2
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print("ready", flush=True)
    shim.serve(running=lambda: not stop)
    print("delayshim: %s" % " ".join("%s=%d" % kv for kv in sorted(shim.line.counts.items())),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
