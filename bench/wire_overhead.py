"""Wire overhead of one task message: what a link carries beyond the tensor's bytes.

A DEALER sends N TASK messages (``wire.encode``, the source's fields, a tensor of B bytes) over
TCP on loopback to a ROUTER that ACKs each one (``wire.encode(Kind.ACK)``, as the node does).
The kernel's per-socket counters (``ss -tin``: ``bytes_acked``) give the TCP payload the
sender wrote per message: the header and the ZMTP framing on top of B. On a 1,500-byte-MTU
link every TCP segment adds Ethernet 14 + IPv4 20 + TCP with timestamps 32 = 66 bytes, and
the sender's TCP ACK of each ACK message is one more bare segment: the model's ``wire_bytes``
(agent/policies/model.py) is printed alongside.

    python3 bench/wire_overhead.py --messages 2000
"""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
import subprocess
import sys

import numpy as np
import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from agent.policies.model import WIRE_MSS_BYTES, WIRE_SEGMENT_OVERHEAD_BYTES, wire_bytes  # noqa
from agent.protocol import wire  # noqa: E402
from agent.protocol.wire import Kind  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bytes_acked(port: int) -> int:
    """TCP payload bytes the client side of the connection to ``port`` has had acknowledged."""
    out = subprocess.run(["ss", "-tinH", "state", "established", "( dport = :%d )" % port],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(m) for m in re.findall(r"bytes_acked:(\d+)", out))


def measure(nbytes: int, messages: int) -> float:
    """TCP payload bytes per task message carrying ``nbytes`` of tensor (sender side)."""
    ctx = zmq.Context()
    port = _port()
    r = ctx.socket(zmq.ROUTER)
    r.bind("tcp://127.0.0.1:%d" % port)
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.ROUTING_ID, b"src0")
    d.connect("tcp://127.0.0.1:%d" % port)
    x = np.zeros(nbytes, dtype=np.uint8)
    fields = {"id": "src0-000001", "source": "src0", "stage": 1, "attempt": 0,
              "created": 1.7e9, "hops": 0, "resends": 0, "token": "0123456789abcdef",
              "ttl_s": 9.5}
    try:
        def one(i):
            fields["id"] = "src0-%06d" % i
            d.send_multipart(wire.encode(Kind.TASK, "src0", fields, [x]), copy=False)
            ident, *frames = r.recv_multipart()
            key = wire.task_key(fields["id"], 0)
            r.send_multipart([ident] + wire.encode(Kind.ACK, "w1", {"keys": [key]}))
            d.recv_multipart()
        one(0)  # the handshake's bytes are not the messages'
        before = _bytes_acked(port)
        for i in range(1, messages + 1):
            one(i)
        return (_bytes_acked(port) - before) / messages
    finally:
        d.close(0)
        r.close(0)
        ctx.term()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000)
    args = ap.parse_args()
    print("| tensor bytes | TCP payload per message | + 66 B per 1,448-B segment + 1 bare ACK "
          "| overhead | model wire_bytes |")
    print("| --- | --- | --- | --- | --- |")
    for b in (3136, 65536, 140000, 770000):
        pay = measure(b, args.messages if b < 100000 else args.messages // 10)
        on_wire = pay + (math.ceil(pay / WIRE_MSS_BYTES) + 1) * WIRE_SEGMENT_OVERHEAD_BYTES
        print("| %d | %.0f | %.0f | +%.1f%% | %.0f |" % (b, pay, on_wire, 100 * (on_wire / b - 1),
                                                      float(wire_bytes(b))))


if __name__ == "__main__":
    main()
