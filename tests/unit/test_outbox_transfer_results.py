"""RESULTS messages fit the node's ``max_message_bytes``, however low a config may set it.

A worker sends the results collected in a loop pass as RESULTS messages of up to
``wire.MAX_BATCH`` results. A receiver drops a message above its ``max_message_bytes`` as
``oversized`` (with every result in it), and a config may set that as low as 1 KiB: 128 results
with the widest ids and tokens take about 70 KB. The outbox splits a batch until each message
fits its own ``max_message_bytes`` (one value across a fleet). A worker's outbox with real
sockets: its source is a ROUTER in this process, connected.
"""

from __future__ import annotations

import time

import pytest
import zmq

from agent.config.checks import NODE_ID_MAX_CHARS
from agent.config.node import DEFAULT_MAX_MESSAGE_BYTES, ConfigError, parse_config
from agent.net import transport as T
from agent.node.build import build_view
from agent.node.capacity import Capacity
from agent.node.limits import ID_MAX_CHARS, check_message_size
from agent.node.outbox import Outbox
from agent.node.outitem import OutItem
from agent.policies.api import AgentPolicy
from agent.protocol import wire
from agent.protocol.wire import Kind
from agent.testbed.ports import free_ports
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR

WORKER = "w" * NODE_ID_MAX_CHARS  # the widest node id: it is in every result
SOURCE = "s" * NODE_ID_MAX_CHARS


def _port() -> int:
    """A free loopback port below the ephemeral range (no outgoing connection takes it)."""
    return free_ports(1)[0]


def _config(tmp_path, source_data: str, **extra):
    return parse_config(dict({
        "node_id": WORKER, "role": "worker", "stage": 1, "bundle": DEMO_BUNDLE_DIR,
        "state_dir": str(tmp_path), "control_bind": "tcp://127.0.0.1:%d" % _port(),
        "data_bind": "tcp://127.0.0.1:%d" % _port(),
        "peers": [{"id": SOURCE, "stage": 0, "data_address": source_data,
                   "control_address": "tcp://127.0.0.1:%d" % _port()}]}, **extra))


def _smallest_max_message_bytes(tmp_path) -> int:
    """The lowest ``max_message_bytes`` a node config takes: 1024, and 1023 is refused."""
    with pytest.raises(ConfigError, match="max_message_bytes"):
        _config(tmp_path, "tcp://127.0.0.1:1", max_message_bytes=1023)
    return _config(tmp_path, "tcp://127.0.0.1:1", max_message_bytes=1024).max_message_bytes


@pytest.fixture
def worker(tmp_path):
    """worker(limit) -> (outbox, source ROUTER) with ``max_message_bytes`` = limit."""
    made = []

    def build(limit):
        ctx = zmq.Context()
        data = "tcp://127.0.0.1:%d" % _port()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(data)
        cfg = _config(tmp_path, data, max_message_bytes=limit)
        transport = T.Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
        made.append((ctx, transport, router))
        transport.open()
        end = time.monotonic() + 30.0
        while not any(kind == T.LINK_UP for kind, _, _ in transport.poll(0.05)):
            assert time.monotonic() < end, "the data connection never came up"
        view = build_view(cfg, load_bundle(DEMO_BUNDLE_DIR), None)
        return Outbox(cfg, transport, AgentPolicy({}, {}), view, Capacity()), router

    yield build
    for ctx, transport, router in made:
        transport.close()
        router.close(linger=0)
        ctx.term()


def _widest_result(n: int) -> OutItem:
    """A result with every field at its widest: ids and token of ``ID_MAX_CHARS``, node ids of
    ``NODE_ID_MAX_CHARS``, integers just under ``wire.MAX_INT`` and MLCI's ``level``."""
    big = wire.MAX_INT - 1
    task_id = ("%d-" % n).ljust(ID_MAX_CHARS, "i")
    fields = {"id": task_id, "attempt": big, "source": SOURCE, "exit_stage": big, "cls": -big,
              "confidence": 0.123456789, "worker": WORKER, "hops": big, "resends": big,
              "created": 1.0e9 + 0.123456789, "token": "t" * ID_MAX_CHARS, "level": big}
    return OutItem(Kind.RESULT, "R:" + wire.task_key(task_id, big), fields, None, dest=SOURCE,
                   keep_until=1e9)


def _messages(router, want_items: int, wait_s: float = 10.0):
    """The RESULTS messages the ROUTER gets until ``want_items`` results have come."""
    got, n, end = [], 0, time.monotonic() + wait_s
    while n < want_items and time.monotonic() < end:
        if router.poll(100):
            frames = router.recv_multipart()[1:]
            got.append(frames)
            n += len(wire.decode(frames).fields["items"])
    return got


def test_the_widest_result_fits_the_smallest_limit_and_a_full_batch_does_not(tmp_path):
    """Rule: one RESULTS message with one widest result fits the smallest max_message_bytes a
    config takes, so a batch split down to single results always reaches its source; a full
    batch of the widest results does not fit it (the reason batches are split by bytes)."""
    smallest = _smallest_max_message_bytes(tmp_path)
    assert smallest == 1024

    def size(n):
        return wire.frames_nbytes(wire.encode(
            Kind.RESULTS, WORKER, {"items": [_widest_result(k).fields for k in range(n)]}))

    assert size(1) <= smallest < size(2)
    assert size(wire.MAX_BATCH) > max(50 * smallest, wire.MAX_HEADER_BYTES)


@pytest.mark.parametrize("limit", [1024, 4096])
def test_results_go_in_messages_within_max_message_bytes_in_order(worker, limit):
    """Rule: with max_message_bytes at 1 KiB or 4 KiB, 130 widest results flushed at once
    reach their source in RESULTS messages each within the limit (the source's loop takes
    every one), every result once and in the order they were sent, and all stay in custody
    until the source ACKs them."""
    out, router = worker(limit)
    items = [_widest_result(k) for k in range(wire.MAX_BATCH + 2)]
    for it in items:
        out.send(it, 100.0)
    out.flush_results(100.0)
    got = _messages(router, len(items))
    keys = []
    for frames in got:
        check_message_size(frames, limit)  # raises WireError("oversized") above it
        keys += ["R:" + wire.task_key(f["id"], f["attempt"])
                 for f in wire.decode(frames).fields["items"]]
    assert keys == [it.key for it in items]
    assert len(got) >= len(items) * 600 // limit  # split, not one message per batch
    assert set(out.items) == set(keys) and out.counters["resends"] == 0


def _short_result(n: int) -> OutItem:
    """A result with a source's usual ids (``cam1-`` and 16 hex digits) and token."""
    task_id = "cam1-%016x" % n
    fields = {"id": task_id, "attempt": 0, "source": SOURCE, "exit_stage": 2, "cls": 7,
              "confidence": 0.9, "worker": WORKER, "hops": 2, "resends": 0, "created": 1.0e9,
              "token": "%016x" % n}
    return OutItem(Kind.RESULT, "R:" + wire.task_key(task_id, 0), fields, None, dest=SOURCE,
                   keep_until=1e9)


@pytest.mark.parametrize("make, sizes", [(_short_result, [wire.MAX_BATCH, 2]),
                                         (_widest_result, [64, 64, 2])])
def test_under_the_default_limit_a_batch_is_split_only_past_one_headers_bytes(
        worker, make, sizes):
    """Rule: under the default max_message_bytes (16 MiB) 130 results with usual ids go in
    two RESULTS messages, 128 and 2 (nothing that fits is split); 128 of the widest take more
    than the 64 KiB a receiver decodes as one header, and are split so each decodes."""
    out, router = worker(DEFAULT_MAX_MESSAGE_BYTES)
    items = [make(k) for k in range(wire.MAX_BATCH + 2)]
    for it in items:
        out.send(it, 100.0)
    out.flush_results(100.0)
    got = _messages(router, len(items))
    assert [len(wire.decode(f).fields["items"]) for f in got] == sizes
    assert all(wire.frames_nbytes(f) <= wire.MAX_HEADER_BYTES for f in got)
