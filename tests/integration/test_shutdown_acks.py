"""A stopping node's last messages reach its peers, and its stop stays bounded whatever they do
(real ZeroMQ sockets over loopback TCP, real processes).

A peer's DEALER (IMMEDIATE) throws away what it received but has not read yet once the
connection drops, so ``Transport.close`` waits ``transport_stop.STOP_SETTLE_S`` after its last
reply before it closes, and lingers on its data sockets at most ``STOP_LINGER_MS``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import zmq

from agent.config.node import Peer
from agent.net import transport as T
from agent.net import transport_stop
from tests.unit.endpoints import loopback_endpoints

WAIT_S = 30.0  # generous: the machine may be loaded
BUSY_S = 0.3  # the peer's loop is in a long pass when the last ACKs arrive


def _pair():
    """Transports of node ``s`` (stopping) and its peer ``w``, each in its own context,
    opened and with w's data connection to s up: (ctx_s, s, ctx_w, w)."""
    ep = loopback_endpoints(("sc", "sd", "wc", "wd"))
    cs, cw = zmq.Context(), zmq.Context()
    s = T.Transport(cs, "s", ep["sc"], ep["sd"], [Peer("w", 1, ep["wc"], ep["wd"])])
    w = T.Transport(cw, "w", ep["wc"], ep["wd"], [Peer("s", 1, ep["sc"], ep["sd"])])
    s.open()
    w.open()
    deadline = time.monotonic() + WAIT_S
    while not any(tag == T.LINK_UP and who == "s" for tag, who, _ in w.poll(0.05)):
        assert time.monotonic() < deadline, "w's data connection to s never came up"
    return cs, s, cw, w


def test_acks_sent_just_before_a_stop_reach_a_peer_whose_loop_reads_them_late(monkeypatch):
    """Every ACK a node sends before it stops reaches the peer's loop, although that loop reads
    them only after a long pass (here BUSY_S, inside the settle time): the stopping node keeps
    its connections until then (without it the peer's DEALER threw them all away)."""
    monkeypatch.setattr(transport_stop, "STOP_SETTLE_S", 10 * BUSY_S)
    cs, s, cw, w = _pair()
    n = 50
    stopped = False
    try:
        for i in range(n):  # tasks (or results) from w, each to be ACKed by s
            assert w.send("s", [b"task %d" % i])
        senders = []
        deadline = time.monotonic() + WAIT_S
        while len(senders) < n:
            assert time.monotonic() < deadline, "s received %d of %d" % (len(senders), n)
            senders += [who for tag, who, _ in s.poll(0.05) if tag == T.DATA]
        replied = threading.Event()
        seen = {"acks": 0, "down": False}

        def peer_loop() -> None:
            replied.wait(WAIT_S)
            time.sleep(BUSY_S)  # a long pass: the ACKs wait, unread, in w's DEALER
            end = time.monotonic() + WAIT_S
            while not seen["down"] and time.monotonic() < end:  # until s's connection drops
                for tag, who, _ in w.poll(0.05):
                    seen["acks"] += tag == T.REPLY and who == "s"
                    seen["down"] = seen["down"] or (tag == T.LINK_DOWN and who == "s")

        reader = threading.Thread(target=peer_loop)
        reader.start()
        for who in senders:
            assert s.reply(who, [b"ack"])
        replied.set()
        s.close()
        cs.term()
        stopped = True
        reader.join(2 * WAIT_S)
        assert seen == {"acks": n, "down": True}
    finally:
        if not stopped:
            s.close()
            cs.term()
        w.close()
        cw.term()


PEER = """
import sys, zmq
ctx = zmq.Context()
d = ctx.socket(zmq.DEALER)
d.setsockopt(zmq.ROUTING_ID, b"w")
d.setsockopt(zmq.RCVHWM, 1)
d.connect(sys.argv[1])
d.send(b"hello")
print("sent", flush=True)
sys.stdin.read()
"""


def test_a_stop_is_bounded_when_a_peer_reads_nothing():
    """A node whose data socket holds megabytes of replies for a peer that reads nothing (its
    process stopped) still closes and ends its context within the bounds
    (STOP_SETTLE_S + STOP_LINGER_MS): ZeroMQ's default linger would wait for ever."""
    ep = loopback_endpoints(("sc", "sd", "wc", "wd"))
    cs = zmq.Context()
    s = T.Transport(cs, "s", ep["sc"], ep["sd"], [Peer("w", 1, ep["wc"], ep["wd"])])
    s.open()
    peer = subprocess.Popen([sys.executable, "-c", PEER, ep["sd"]], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    ended = threading.Event()
    try:
        assert peer.stdout.readline().strip() == "sent"
        deadline = time.monotonic() + WAIT_S
        while not any(tag == T.DATA for tag, _, _ in s.poll(0.05)):
            assert time.monotonic() < deadline, "the peer's message never came"
        os.kill(peer.pid, signal.SIGSTOP)
        block = b"x" * (512 * 1024)
        for _ in range(100):  # 50 MB: far more than the kernel's buffers take
            s.reply(b"w", [block])

        def stop() -> None:
            s.close()
            cs.term()
            ended.set()

        threading.Thread(target=stop, daemon=True).start()
        assert ended.wait(WAIT_S), "the stop waited on a peer that reads nothing"
    finally:
        os.kill(peer.pid, signal.SIGCONT)
        peer.kill()
        peer.wait()
        peer.stdout.close()
        peer.stdin.close()
        if not ended.is_set():
            s.close()
            cs.destroy(linger=0)
