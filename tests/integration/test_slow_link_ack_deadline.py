"""A task on a real slow link is not re-sent while its first copy is still on the wire.

The link: a TCP proxy in this process that passes the sender's bytes on at a fixed rate (the
receiver's ACKs come back at once), between a source's outbox (its transport, real ZeroMQ
sockets) and a ROUTER that ACKs what it reads, as a worker does. Nothing paces the sender
(``emulate_links`` off, as on a kernel-shaped or real network): the task takes longer to cross
than ``ack_timeout_s``, and another successor is usable all along.
"""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
import zmq

from agent.net import transport as T
from agent.net.links import message_wire_bytes
from agent.node.build import build_view
from agent.node.capacity import Capacity
from agent.node.outbox import Outbox
from agent.node.outitem import OutItem
from agent.policies.api import AgentPolicy
from agent.protocol import wire
from agent.protocol.wire import Kind
from agent.testbed.ports import free_ports
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.test_outbox_liveness import connected_source

LINK_BYTES_S = 400000.0  # what the proxy passes on
CONFIGURED_BYTES_S = 100000.0  # what the sender is told (a cautious prior: a quarter)
TASK_BYTES = 200000  # ~0.5 s on the link, more than twice ACK_S
ACK_S = 0.2


def _port() -> int:
    """A free loopback port below the ephemeral range (no outgoing connection takes it)."""
    return free_ports(1)[0]


class SlowLink:
    """A TCP proxy from ``port`` to ``upstream``: the client's bytes go on at ``rate_bytes_s``
    (in 1,460-byte segments), the server's come back as they are read."""

    def __init__(self, upstream_port: int, rate_bytes_s: float):
        self.rate_bytes_s = rate_bytes_s
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        self.socks = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.socks += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        free_at = 0.0
        try:
            while not self.closed.is_set():
                chunk = src.recv(1460 if slow else 65536)
                if not chunk:
                    break
                if slow:  # the segment leaves once the link has carried it
                    free_at = max(free_at, time.monotonic()) + len(chunk) / self.rate_bytes_s
                    time.sleep(max(0.0, free_at - time.monotonic()))
                dst.sendall(chunk)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.closed.set()
        for s in self.socks:
            s.close()


@pytest.fixture
def link(tmp_path):
    """(outbox, transport, {peer: ROUTER}): a source whose successor w1 is behind a slow link
    and w2 is reached directly, both connected."""
    ctx = zmq.Context()
    routers, ports = {}, {}
    for peer in ("w1", "w2"):
        ports[peer] = _port()
        r = ctx.socket(zmq.ROUTER)
        r.setsockopt(zmq.LINGER, 0)
        r.bind("tcp://127.0.0.1:%d" % ports[peer])
        routers[peer] = r
    slow = SlowLink(ports["w1"], LINK_BYTES_S)
    peers = [{"id": "w1", "stage": 1, "data_address": "tcp://127.0.0.1:%d" % slow.port,
              "control_address": "tcp://127.0.0.1:%d" % _port(),
              "link_rate_bytes_s": CONFIGURED_BYTES_S},
             {"id": "w2", "stage": 1, "data_address": "tcp://127.0.0.1:%d" % ports["w2"],
              "control_address": "tcp://127.0.0.1:%d" % _port(), "link_rate_bytes_s": 1e8}]
    cfg, transport = connected_source(ctx, tmp_path, peers, ACK_S)
    view = build_view(cfg, load_bundle(DEMO_BUNDLE_DIR), None)
    yield Outbox(cfg, transport, AgentPolicy({}, {}), view, Capacity()), transport, routers
    transport.close()
    slow.close()
    for r in routers.values():
        r.close(linger=0)
    ctx.term()


def test_a_task_slower_to_cross_than_the_ack_timeout_is_sent_once_and_times_its_link(link):
    """Rule: a task that takes ~0.5 s to cross a link nothing paces, with ack_timeout_s 0.2 s
    and another successor usable, is sent once (no re-send, nothing to the other successor):
    its ACK deadline counts from when the link (at its configured rate) is expected to have
    carried it. Its first send's ACK then times the link (the measured rate)."""
    out, transport, routers = link
    out.view.alive.add("w1")
    x = np.zeros(TASK_BYTES, dtype=np.uint8)
    item = OutItem(Kind.TASK, "t1#0", {"id": "t1", "source": "s1", "stage": 1, "attempt": 0,
                                       "created": 0.0, "hops": 0, "resends": 0,
                                       "token": "0" * 16}, x)
    sent = time.monotonic()
    out.send(item, sent)
    assert item.dest == "w1"
    out.view.alive.add("w2")  # a re-send would go there
    copies = {"w1": 0, "w2": 0}
    acked = None
    end = sent + 30.0
    while acked is None:
        assert time.monotonic() < end, "no ACK came back over the slow link"
        for peer, r in routers.items():
            while r.poll(0):
                frames = r.recv_multipart()
                copies[peer] += 1
                f = wire.decode(frames[1:]).fields
                ack = wire.encode(Kind.ACK, peer, {"keys": [wire.task_key(f["id"],
                                                                          f["attempt"])]})
                r.send_multipart([frames[0]] + list(ack))  # as a worker ACKs what it reads
        for kind, who, frames in transport.poll(0.01):
            if kind == T.REPLY:
                out.on_ack(who, wire.decode(frames).fields["keys"], time.monotonic())
                if not out.items:
                    acked = time.monotonic()
        out.run_timers(time.monotonic(), lambda key, now: None)
    assert copies == {"w1": 1, "w2": 0}
    assert out.counters["resends"] == 0 and out.counters["acked"] == 1
    # the link really took longer than ack_timeout_s: a deadline from the send re-sent it
    assert acked - sent > message_wire_bytes(TASK_BYTES) / LINK_BYTES_S > 2 * ACK_S
    measured = out.link_rates.fastest_recent("w1")
    assert 0 < measured <= 1.05 * LINK_BYTES_S
