"""Behind a slow link, a neighbour is not declared gone while a task is crossing, and one task
in flight does not fill the link by itself; fast links keep their timeouts and bounds.

A neighbour's control heartbeats (or their TCP ACKs) queue behind the tasks crossing its link,
so its silence limit grows with the link's message time as its data heartbeat timeout does
(``agent.net.liveness.neighbour_timeout_s``, ``agent.node.neighbourtime``). The outbox holds
off a successor only when more than the larger of ``LINK_QUEUE_MAX_S`` and its largest task's
link time is queued (``agent.node.linkclock.links_behind``). A real stage-1 worker node (its
sockets never bound, on a clock of the test's) and a real source outbox with real ZeroMQ
successors."""

from __future__ import annotations

import dataclasses
import time

import pytest
import zmq

from agent.net import liveness
from agent.net.links import message_wire_bytes
from agent.node.build import build
from agent.node.linkclock import links_behind
from agent.net.liveness import LINK_QUEUE_MAX_S
from agent.testbed.local import node_configs
from agent.testbed.topology import parse_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.test_loop_stall import on_test_clock
from tests.unit.test_outbox_liveness import (_received, _task, connected_source,
                                             router_peers, source_side)

SLOW_BYTES_S, FAST_BYTES_S = 2000.0, 1.6e6
CHAIN = ["w1a", "w2a", "w3a", "w4a"]


def test_a_fast_link_keeps_the_configured_silence_and_a_slow_one_adds_its_message_time():
    """Rule: a neighbour's silence limit is the configured one plus what its link's data
    heartbeat timeout has above HEARTBEAT_TIMEOUT_MS: nothing for an unknown rate, a few ms
    for a fast link, twice the message's link time for a slow one."""
    base = 2.0
    assert liveness.neighbour_timeout_s(base, liveness.link_timeout_ms(3570.0, 0.0)) == base
    fast = liveness.neighbour_timeout_s(base, liveness.link_timeout_ms(3570.0, FAST_BYTES_S))
    assert base <= fast < base + 0.01
    slow = liveness.neighbour_timeout_s(base, liveness.link_timeout_ms(3570.0, SLOW_BYTES_S))
    assert slow == pytest.approx(base + 2 * 3570.0 / SLOW_BYTES_S, abs=0.002)


@pytest.fixture
def node(tmp_path):
    """The stage-1 worker w1a of a chain s1 -> w1a -> ... -> w4a, its link from s1 at 2,000 B/s
    and its link to w2a at 1.6 MB/s; both neighbours alive, heard at the test clock's start."""
    topo = parse_topology({
        "sources": [{"id": "s1", "share": 1.0}],
        "workers": [{"id": w, "stage": h} for h, w in enumerate(CHAIN, start=1)],
        "links": [{"from": a, "to": b, "rate_bytes_s": SLOW_BYTES_S if a == "s1"
                   else FAST_BYTES_S} for a, b in zip(["s1"] + CHAIN, CHAIN)]})
    cfg = node_configs(topo, load_bundle(DEMO_BUNDLE_DIR).path, "fixed", 1.0, 1.0,
                       str(tmp_path))["w1a"]
    built = build(dataclasses.replace(cfg))
    yield on_test_clock(built)
    built.close()


def _listen_until(node, silent_s):
    """The loop runs (a heartbeat pass every interval, no stall) until its neighbours have been
    silent for ``silent_s``."""
    hb = node.cfg.heartbeat_interval_s
    end = node.t[0] + silent_s
    while node.t[0] < end:
        node.t[0] = min(node.t[0] + hb, end)
        node.note_awake(hb)
        node._heartbeat(node.clock())


def test_a_neighbour_behind_a_slow_link_is_not_gone_while_a_task_crosses_it(node):
    """Rule: silent a little longer than the configured limit, the neighbour on the fast link
    (w2a) is gone as before, the source behind the 2,000 B/s link (s1) is not (its limit has
    twice a stage-1 task's link time more); past its own limit it is gone too."""
    base = node.cfg.neighbour_timeout_rounds * node.cfg.heartbeat_interval_s
    slow_limit = node._silence.limit_s("s1")
    assert base <= node._silence.limit_s("w2a") < base + 0.05  # milliseconds more
    assert slow_limit >= base + 2 * message_wire_bytes(3136) / SLOW_BYTES_S
    start = node.t[0]
    _listen_until(node, base + 0.05)
    assert node.view.alive == {"s1"}
    _listen_until(node, start + slow_limit + 0.05 - node.t[0])
    assert node.view.alive == set()


@pytest.fixture
def source(tmp_path):
    """A source whose only stage-1 successor w1 is a real ROUTER here behind a 2,000 B/s link,
    w2 one behind a fast link; its transport is open and connected to both."""
    ctx = zmq.Context()
    routers, peers = router_peers(ctx, {"w1": SLOW_BYTES_S, "w2": FAST_BYTES_S})
    cfg, transport = connected_source(ctx, tmp_path, peers)
    out, side = source_side(cfg, transport, tmp_path)
    yield out, side, routers
    transport.close()
    for r in routers.values():
        r.close(linger=0)
    ctx.term()


def test_one_task_longer_than_the_queue_bound_does_not_fill_its_link(source):
    """Rule: w1's link needs ~1.8 s for one task (> LINK_QUEUE_MAX_S): with that one task
    unacknowledged w1 is not held off and the source accepts the next, which goes to w1; with
    two queued (more than one task's time) w1 is full: a third waits and the source rejects
    new ones (overload)."""
    out, side, routers = source
    out.view.alive.add("w1")
    nbytes = 3136
    assert message_wire_bytes(nbytes) / SLOW_BYTES_S > LINK_QUEUE_MAX_S
    now = time.monotonic()
    out.send(_task("t1", nbytes), now)
    assert out.counters["link_full"] == 0 and "w1" not in out.view.unavailable
    assert side.refusal() == ""
    out.send(_task("t2", nbytes), now)
    assert [i.dest for i in out.items.values()] == ["w1", "w1"] and not out.waiting
    assert _received(routers["w1"]) == 2
    out.send(_task("t3", nbytes), now)  # behind two tasks: w1 is full, the task waits
    assert out.counters["link_full"] >= 1 and "w1" in out.view.unavailable
    assert [i.key for i in out.waiting] == ["t3"]
    assert side.refusal() == "overload"


def test_the_bound_is_unchanged_where_a_task_is_short():
    """Rule: where one task takes less than the bound, a link is behind once its queued tasks
    take more than LINK_QUEUE_MAX_S, by the excess, as before; where one task alone takes
    longer, that task alone is never behind and a second is behind by one task's time less
    the larger bound."""
    short = _task("a", 100)
    short.dest, short.link_start = "w2", 1.0
    per = message_wire_bytes(100) / FAST_BYTES_S
    n = int(LINK_QUEUE_MAX_S / per)
    items = [short] * n
    assert links_behind(items, [{"w2": FAST_BYTES_S}], LINK_QUEUE_MAX_S) == {}
    over = links_behind(items + [short] * 3, [{"w2": FAST_BYTES_S}], LINK_QUEUE_MAX_S)
    assert over["w2"] == pytest.approx((n + 3) * per - LINK_QUEUE_MAX_S)
    big = _task("b", 3136)
    big.dest, big.link_start = "w1", 1.0
    one_s = message_wire_bytes(3136) / SLOW_BYTES_S
    assert links_behind([big], [{"w1": SLOW_BYTES_S}], LINK_QUEUE_MAX_S) == {}
    two = links_behind([big, big], [{"w1": SLOW_BYTES_S}], LINK_QUEUE_MAX_S)
    assert two["w1"] == pytest.approx(one_s)
