"""A check of the netns plumbing: three devices, one link shaped, a timed transfer over it.

``python -m agent.testbed.netcheck --rate R --bytes B`` builds devices a, b and c, shapes
a -> b to R bytes/s (a -> c stays unshaped), sends B bytes over TCP from a to b and from a to
c, and prints one JSON object: the transfer times, B/R, and the testbed namespaces left after
the network is removed. As root it runs directly; otherwise run it inside ``unshare -Urnm``
(``agent.testbed.netns.userns_wrapper``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import List

from agent.policies.model import WIRE_MSS_BYTES, WIRE_SEGMENT_OVERHEAD_BYTES
from agent.testbed.netns import PREFIX, Device, Network, NetPlan, Shaped, testbed_namespaces

RECEIVER = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); n = 0; t0 = None
while True:
    b = c.recv(65536)
    if not b:
        break
    t0 = t0 or time.monotonic(); n += len(b)
print("%d %.6f" % (n, time.monotonic() - t0), flush=True)
"""

SENDER = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
c.sendall(b"x" * int(sys.argv[3])); c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
"""


MESSAGE_RECEIVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); n = int(sys.argv[3])
while True:
    got = 0
    while got < n:
        b = c.recv(65536)
        if not b:
            sys.exit(0)
        got += len(b)
    c.sendall(b"k")
"""

MESSAGE_SENDER = r"""
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
n, reps, pause = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
for _ in range(reps):
    time.sleep(pause)
    t = time.monotonic(); c.sendall(b"x" * n); c.recv(1)
    print("%.6f" % (time.monotonic() - t), flush=True)
"""

def tcp_wire_bytes(payload_bytes: int) -> int:
    """Bytes a TCP payload takes on the link in MTU-sized packets, headers included (the
    model's per-segment overhead; no message framing: this is a bare socket's payload)."""
    return payload_bytes + int(-(-payload_bytes // WIRE_MSS_BYTES) * WIRE_SEGMENT_OVERHEAD_BYTES)


def three_devices(prefix: str, rate_bytes_s: float) -> NetPlan:
    """Devices a, b, c (one agent each) with a -> b shaped to ``rate_bytes_s``."""
    devs = tuple(Device(n, "%s-d%d" % (prefix, k), k, (n,))
                 for k, n in enumerate(("a", "b", "c"), start=1))
    return NetPlan(prefix, devs, (Shaped(1, 2, rate_bytes_s),))


def timed_transfer(net: Network, src: str, dst: str, nbytes: int, port: int = 7000) -> float:
    """Seconds from the first to the last byte of ``nbytes`` sent from ``src`` to ``dst``."""
    recv = subprocess.Popen(net.wrap(dst) + [sys.executable, "-c", RECEIVER,
                                             net.plan.address_of(dst), str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None
        recv.stdout.readline()  # listening
        subprocess.run(net.wrap(src) + [sys.executable, "-c", SENDER, net.plan.address_of(dst),
                                        str(port), str(nbytes)], check=True, timeout=120)
        n, secs = recv.stdout.readline().split()
        if int(n) != nbytes:
            raise RuntimeError("received %s of %d bytes" % (n, nbytes))
        return float(secs)
    finally:
        recv.kill()
        recv.wait()


def message_delays(net: Network, src: str, dst: str, nbytes: int, reps: int = 5,
                   pause_s: float = 0.3, port: int = 7002) -> List[float]:
    """Seconds from sending ``nbytes`` (one message, on an idle link: ``pause_s`` after the
    previous one's acknowledgement) to its one-byte acknowledgement from ``dst``, ``reps``
    times over one connection."""
    recv = subprocess.Popen(net.wrap(dst) + [sys.executable, "-c", MESSAGE_RECEIVER,
                                             net.plan.address_of(dst), str(port), str(nbytes)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None
        recv.stdout.readline()  # listening
        out = subprocess.run(net.wrap(src) + [sys.executable, "-c", MESSAGE_SENDER,
                                              net.plan.address_of(dst), str(port), str(nbytes),
                                              str(reps), str(pause_s)],
                             stdout=subprocess.PIPE, text=True, check=True, timeout=120).stdout
        return [float(x) for x in out.split()]
    finally:
        recv.kill()
        recv.wait()


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.testbed.netcheck")
    p.add_argument("--rate", type=float, default=250e3, help="shaped rate a -> b, bytes/s")
    p.add_argument("--bytes", type=int, default=1000000, help="bytes to transfer")
    p.add_argument("--message-bytes", type=int, default=3900,
                   help="one message's TCP payload for the idle-link delay (0: skip)")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    plan = three_devices("%s%d" % (PREFIX, os.getpid()), args.rate)
    with Network(plan) as net:
        setup_s = time.monotonic() - t0
        shaped_s = timed_transfer(net, "a", "b", args.bytes)
        free_s = timed_transfer(net, "a", "c", args.bytes, port=7001)
        msg = (sorted(message_delays(net, "a", "b", args.message_bytes))
               if args.message_bytes > 0 else [])
    left = [ns for ns in testbed_namespaces() if ns.startswith(plan.prefix + "-")]
    print(json.dumps({"rate_bytes_s": args.rate, "bytes": args.bytes,
                      "expected_s": args.bytes / args.rate, "shaped_s": shaped_s,
                      "unshaped_s": free_s, "setup_s": setup_s,
                      "message_bytes": args.message_bytes,
                      "message_wire_s": tcp_wire_bytes(args.message_bytes) / args.rate,
                      "message_s": msg[len(msg) // 2] if msg else None, "prefix": plan.prefix + "-",
                      "left": left}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
