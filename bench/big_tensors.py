"""Pipelined throughput of big task tensors: the agent's data plane next to raw zero-copy pyzmq.

One sender process keeps ``--window`` messages in flight to one receiver process over TCP on
loopback; the receiver acknowledges each one:

- raw: a pyzmq DEALER sends one frame (``copy=False``), the ROUTER answers a 3-byte ACK;
- agent: ``agent.net.transport.Transport`` on both ends, the TASK encoded with
  ``agent.protocol.wire.encode`` (zero-copy tensor frame), decoded with ``wire.decode`` on the
  receiver, which answers an encoded ACK; the sender decodes the ACKs.

Both receivers touch the tensor's first element (the agent's own cost, as in
``hop_overhead.py``); with ``--read`` both read it whole (``sum``, as an engine would).

Raw and agent runs alternate (``--pairs`` times per size); the table gives medians of MB/s,
the receiver's CPU microseconds per message (``time.process_time``) and its minor page faults
per message (``getrusage``): a fresh buffer per message costs a fault per 4 KiB page plus
the zeroing; and the sender's CPU microseconds per message. Goal: agent >= 0.9x raw from 256 KiB to 4 MiB. ``--profile FILE`` writes a
cProfile of one agent receiver at the largest size.

    python3 bench/big_tensors.py [--sizes 256,1024,4096] [--seconds 2] [--window 8] [--pairs 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _free_port() -> int:
    from agent.testbed.ports import free_ports

    return free_ports(1)[0]


def _usage():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), ru.ru_minflt


def _tune(on: bool) -> None:
    """The agent's start-up allocator setting (``agent.ops.malloc``), when ``on``."""
    if on:
        from agent.ops.malloc import tune_allocator

        tune_allocator()


def raw_receiver(port: int, out, read: bool, tuned: bool = False) -> None:
    import numpy as np
    import zmq

    _tune(tuned)
    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    r.setsockopt(zmq.LINGER, 0)
    r.bind("tcp://127.0.0.1:%d" % port)
    n, start = 0, None
    while True:
        frames = r.recv_multipart(copy=False)
        if len(frames[1]) == 4 and frames[1].bytes == b"stop":
            break
        if start is None:
            start = _usage()
        x = np.frombuffer(memoryview(frames[1]), dtype=np.float32)
        _ = x.sum() if read else x[0]
        r.send_multipart([frames[0], b"ack"], copy=False)
        n += 1
    end = _usage()
    out.put((n, end[0] - start[0], end[1] - start[1]))
    r.close()
    ctx.term()


def agent_receiver(port: int, ctl_port: int, out, read: bool, profile: str = "",
                   tuned: bool = True, ack_each: bool = False) -> None:
    import logging

    import zmq

    from agent.net.transport import DATA, Transport
    from agent.protocol import wire

    _tune(tuned)
    logging.basicConfig(level=logging.ERROR)
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
    ctx = zmq.Context()
    t = Transport(ctx, "recv", "tcp://127.0.0.1:%d" % ctl_port, "tcp://127.0.0.1:%d" % port, [])
    t.open()
    n, start, done = 0, None, False
    while not done:
        keys: dict = {}  # sender -> task keys: one ACK per sender and poll, as the agent sends
        for kind, ident, frames in t.poll(1.0):
            if kind != DATA:
                continue
            if len(frames) == 1 and frames[0].bytes == b"stop":
                done = True
                break
            if start is None:
                start = _usage()
                if prof is not None:
                    prof.enable()
            msg = wire.decode(frames)
            x = msg.tensors[0]
            _ = x.sum() if read else x[0]
            keys.setdefault(ident, []).append(wire.task_key(msg.fields["id"],
                                                            msg.fields["attempt"]))
            n += 1
            if ack_each:  # the agent before ACKs were batched per poll
                t.reply(ident, wire.encode(wire.Kind.ACK, "recv", {"keys": keys.pop(ident)}))
        for ident, ks in keys.items():
            t.reply(ident, wire.encode(wire.Kind.ACK, "recv", {"keys": ks}))
    end = _usage()
    if prof is not None:
        prof.disable()
        prof.dump_stats(profile)
    out.put((n, end[0] - start[0], end[1] - start[1]))
    t.close()
    ctx.term()


def send_raw(port: int, nbytes: int, seconds: float, window: int, tuned: bool = False) -> float:
    import zmq

    _tune(tuned)
    ctx = zmq.Context()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect("tcp://127.0.0.1:%d" % port)
    buf = memoryview(os.urandom(nbytes))
    d.send(buf, copy=False)
    d.recv()
    sent = acked = 0
    t0, c0 = time.perf_counter(), time.process_time()
    end = t0 + seconds
    while time.perf_counter() < end:
        while sent - acked < window:
            d.send(buf, copy=False)
            sent += 1
        d.recv()
        acked += 1
    while acked < sent:
        d.recv()
        acked += 1
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    d.send(b"stop")
    d.close()
    ctx.term()
    return acked * nbytes / dt, cpu / acked * 1e6


def send_agent(port: int, ctl_port: int, nbytes: int, seconds: float, window: int,
               tuned: bool = True) -> float:
    import logging

    import numpy as np
    import zmq

    from agent.config.node import Peer
    from agent.net.transport import REPLY, Transport
    from agent.protocol import wire

    _tune(tuned)
    logging.basicConfig(level=logging.ERROR)
    ctx = zmq.Context()
    peer = Peer("recv", 1, "tcp://127.0.0.1:%d" % ctl_port, "tcp://127.0.0.1:%d" % port)
    t = Transport(ctx, "send", "tcp://127.0.0.1:%d" % _free_port(),
                  "tcp://127.0.0.1:%d" % _free_port(), [peer])
    t.open()
    x = np.random.default_rng(0).standard_normal(nbytes // 4).astype(np.float32)

    def send(i: int) -> None:
        frames = wire.encode(wire.Kind.TASK, "send",
                             {"id": "t%d" % i, "source": "send", "stage": 1, "attempt": 0,
                              "created": time.time(), "hops": 0, "resends": 0}, [x])
        while not t.send("recv", frames):  # IMMEDIATE: wait for the connection at start
            time.sleep(0.001)

    def acks() -> int:
        got = 0
        for ev in t.poll(5.0):
            if ev[0] == REPLY:
                got += len(wire.decode(ev[2]).fields["keys"])
        return got

    send(0)
    while not acks():
        pass
    sent = acked = 0
    t0, c0 = time.perf_counter(), time.process_time()
    end = t0 + seconds
    while time.perf_counter() < end:
        while sent - acked < window:
            send(sent + 1)
            sent += 1
        acked += acks()
    while acked < sent:
        acked += acks()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    t.send("recv", [b"stop"])
    time.sleep(0.1)
    t.close()
    ctx.term()
    return acked * nbytes / dt, cpu / acked * 1e6


def one(mode: str, nbytes: int, seconds: float, window: int, read: bool, profile: str = "",
        tuned: bool = False, ack_each: bool = False):
    """One run: (MB/s, receiver CPU us/msg, receiver faults/msg, sender CPU us/msg).

    ``tuned``: the process pair runs the agent's allocator setting (``agent.ops.malloc``).
    """
    mpc = mp.get_context("spawn")
    out = mpc.Queue()
    port, ctl = _free_port(), _free_port()
    if mode == "raw":
        srv = mpc.Process(target=raw_receiver, args=(port, out, read, tuned))
    else:
        srv = mpc.Process(target=agent_receiver,
                          args=(port, ctl, out, read, profile, tuned, ack_each))
    srv.start()
    if mode == "raw":
        rate, tx_us = send_raw(port, nbytes, seconds, window, tuned)
    else:
        rate, tx_us = send_agent(port, ctl, nbytes, seconds, window, tuned)
    n, cpu_s, faults = out.get(timeout=30)
    srv.join(10)
    return rate, cpu_s / max(n, 1) * 1e6, faults / max(n, 1), tx_us


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,1024,4096", help="tensor sizes in KiB")
    ap.add_argument("--seconds", type=float, default=2.0, help="sending time per run")
    ap.add_argument("--window", type=int, default=8, help="messages in flight")
    ap.add_argument("--pairs", type=int, default=3, help="alternated raw/agent runs per size")
    ap.add_argument("--read", action="store_true", help="receivers read every tensor whole")
    ap.add_argument("--profile", default="", help="cProfile file of one agent receiver")
    ap.add_argument("--agent-untuned", action="store_true",
                    help="agent processes without the start-up allocator setting (as before it)")
    ap.add_argument("--raw-tuned", action="store_true",
                    help="raw processes with the agent's allocator setting too")
    ap.add_argument("--ack-each", action="store_true",
                    help="agent receiver ACKs every message on its own (as before batching)")
    args = ap.parse_args()
    print("machine: %s, %d cores, Python %s; window %d, %g s per run, %d pairs, tensors %s; "
          "allocator tuned: agent %s, raw %s; agent ACKs %s"
          % (platform.machine(), os.cpu_count() or 0, platform.python_version(), args.window,
             args.seconds, args.pairs, "read whole" if args.read else "touched",
             "no" if args.agent_untuned else "yes", "yes" if args.raw_tuned else "no",
             "per message" if args.ack_each else "per poll"))
    print("| size | raw MB/s | agent MB/s | agent/raw | raw rx us/msg | agent rx us/msg "
          "| raw rx faults/msg | agent rx faults/msg | raw tx us/msg | agent tx us/msg |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    sizes = [int(s) * 1024 for s in args.sizes.split(",")]
    for nbytes in sizes:
        raw, ag = [], []
        for _ in range(args.pairs):
            raw.append(one("raw", nbytes, args.seconds, args.window, args.read,
                           tuned=args.raw_tuned))
            ag.append(one("agent", nbytes, args.seconds, args.window, args.read,
                          tuned=not args.agent_untuned, ack_each=args.ack_each))
        r = [statistics.median(col) for col in zip(*raw)]
        a = [statistics.median(col) for col in zip(*ag)]
        print("| %d KiB | %.0f | %.0f | %.2f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |"
              % (nbytes // 1024, r[0] / 1e6, a[0] / 1e6, a[0] / r[0], r[1], a[1], r[2], a[2],
                 r[3], a[3]))
        sys.stdout.flush()
    if args.profile:
        one("agent", sizes[-1], args.seconds, args.window, args.read, args.profile,
            tuned=not args.agent_untuned, ack_each=args.ack_each)
        print("profile of one agent receiver at %d KiB: %s" % (sizes[-1] // 1024, args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
