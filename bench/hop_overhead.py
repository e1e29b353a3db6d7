"""Per-hop cost of the agent's data plane next to raw pyzmq, for payloads 1 KiB .. 1 MiB.

One hop = a task tensor sent from one process to the next and its acknowledgement coming back,
over TCP on loopback, between two separate processes:

- raw: a pyzmq DEALER sends one frame (``copy=False``), the peer's ROUTER answers a 3-byte ACK.
- agent: ``agent.net.transport.Transport`` on both ends, the TASK encoded with ``agent.protocol.wire.encode``
  (msgpack header + raw tensor frame, zero-copy from 64 KiB), decoded and validated with
  ``agent.protocol.wire.decode`` on the receiver (which touches the tensor as the engine would receive
  it), an ACK encoded, sent back through the ROUTER, decoded by the sender.

No engine runs: this is the agent's own time per hop. The figure is the median round-trip per
message; the goal is agent <= 2x raw from 64 KiB up.

    python3 bench/hop_overhead.py [--sizes 1,4,16,64,256,1024] [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _free_port() -> int:
    from agent.testbed.ports import free_ports

    return free_ports(1)[0]


def raw_server(port: int) -> None:
    import zmq

    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    r.setsockopt(zmq.LINGER, 0)
    r.bind("tcp://127.0.0.1:%d" % port)
    while True:
        frames = r.recv_multipart(copy=False)
        if frames[1].bytes == b"stop":
            break
        r.send_multipart([frames[0], b"ack"], copy=False)
    r.close()
    ctx.term()


def agent_server(port: int, ctl_port: int) -> None:
    import zmq

    from agent.protocol import wire
    from agent.net.transport import DATA, Transport

    logging.basicConfig(level=logging.ERROR)  # no start-up notices in the table

    ctx = zmq.Context()
    t = Transport(ctx, "recv", "tcp://127.0.0.1:%d" % ctl_port, "tcp://127.0.0.1:%d" % port, [])
    t.open()
    while True:
        for kind, ident, frames in t.poll(1.0):
            if kind != DATA:
                continue
            if len(frames) == 1 and frames[0].bytes == b"stop":
                t.close()
                ctx.term()
                return
            msg = wire.decode(frames)
            x = msg.tensors[0]
            _ = x[0]  # the engine would read the tensor in place
            ack = wire.encode(wire.Kind.ACK, "recv",
                              {"keys": [wire.task_key(msg.fields["id"], msg.fields["attempt"])]})
            t.reply(ident, ack)


def bench_raw(port: int, payload: bytes, seconds: float) -> list:
    import zmq

    ctx = zmq.Context()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect("tcp://127.0.0.1:%d" % port)
    buf = memoryview(payload)
    times = []
    for _ in range(20):  # connect + warm up
        d.send(buf, copy=len(payload) < 65536)
        d.recv()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        d.send(buf, copy=len(payload) < 65536)
        d.recv()
        times.append(time.perf_counter() - t0)
    d.send(b"stop")
    d.close()
    ctx.term()
    return times


def bench_agent(port: int, ctl_port: int, nbytes: int, seconds: float) -> list:
    import numpy as np
    import zmq

    from agent.protocol import wire
    from agent.config.node import Peer
    from agent.net.transport import REPLY, Transport

    logging.basicConfig(level=logging.ERROR)
    ctx = zmq.Context()
    peer = Peer("recv", 1, "tcp://127.0.0.1:%d" % ctl_port, "tcp://127.0.0.1:%d" % port)
    cport, dport = _free_port(), _free_port()
    t = Transport(ctx, "send", "tcp://127.0.0.1:%d" % cport, "tcp://127.0.0.1:%d" % dport, [peer])
    t.open()
    x = np.random.default_rng(0).standard_normal(nbytes // 4).astype(np.float32)
    times = []

    def one(i: int) -> None:
        frames = wire.encode(wire.Kind.TASK, "send",
                             {"id": "t%d" % i, "source": "send", "stage": 1, "attempt": 0,
                              "created": time.time(), "hops": 0, "resends": 0}, [x])
        while not t.send("recv", frames):  # IMMEDIATE: wait for the connection at start
            time.sleep(0.001)
        while True:
            ev = [e for e in t.poll(5.0) if e[0] == REPLY]
            if ev:
                wire.decode(ev[0][2])
                return

    for i in range(20):
        one(i)
    end = time.perf_counter() + seconds
    i = 20
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        one(i)
        times.append(time.perf_counter() - t0)
        i += 1
    t.send("recv", [b"stop"])
    time.sleep(0.1)
    t.close()
    ctx.term()
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,4,16,64,256,1024", help="payload sizes in KiB")
    ap.add_argument("--seconds", type=float, default=1.5, help="measuring time per size and mode")
    args = ap.parse_args()
    sizes = [int(s) * 1024 for s in args.sizes.split(",")]
    mpc = mp.get_context("spawn")
    print("machine: %s, %d cores, Python %s" % (platform.machine(), os.cpu_count() or 0,
                                               platform.python_version()))
    print("%9s %10s %10s %10s %10s %7s" % ("payload", "raw p50", "agent p50", "raw p90",
                                           "agent p90", "ratio"))
    rows = []
    for n in sizes:
        port = _free_port()
        srv = mpc.Process(target=raw_server, args=(port,))
        srv.start()
        raw = bench_raw(port, os.urandom(n), args.seconds)
        srv.join(10)
        port, ctl = _free_port(), _free_port()
        srv = mpc.Process(target=agent_server, args=(port, ctl))
        srv.start()
        ag = bench_agent(port, ctl, n, args.seconds)
        srv.join(10)
        r50, a50 = statistics.median(raw), statistics.median(ag)
        r90 = sorted(raw)[int(0.9 * len(raw))]
        a90 = sorted(ag)[int(0.9 * len(ag))]
        rows.append((n, r50, a50))
        print("%7d KiB %8.0f us %8.0f us %8.0f us %8.0f us %6.2fx"
              % (n // 1024, r50 * 1e6, a50 * 1e6, r90 * 1e6, a90 * 1e6, a50 / r50))
        sys.stdout.flush()
    worst = max((a / r for n, r, a in rows if n >= 65536), default=None)
    if worst is not None:
        print("worst agent/raw ratio from 64 KiB up: %.2fx (goal <= 2x)" % worst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
