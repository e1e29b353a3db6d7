"""Custody ends only by an ACK from a hop the item was sent to: an ACK naming the key of a task
or result that went elsewhere is counted (``ack_not_sent_<peer>``) and changes nothing, while a
late ACK from an earlier destination (the task was re-sent since) still ends it. The transport
is real but never bound: every send fails at once and the outbox keeps the item for a re-send,
which is all these rules need."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from agent.config.node import parse_config
from agent.net.transport import Transport
from agent.node.build import build_view
from agent.node.capacity import Capacity, CapacityReport
from agent.node.outbox import Outbox
from agent.node.outitem import OutItem
from agent.policies.api import AgentPolicy
from agent.protocol.wire import Kind
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.endpoints import loopback_endpoints

EP = loopback_endpoints((5641, 5642, 5651, 5652, 5661, 5662, 5671, 5672))  # free ports


@pytest.fixture
def out(tmp_path):
    """A stage-1 worker's outbox: source s1, stage-2 successors w2 and w3, all alive."""
    cfg = parse_config({
        "node_id": "w1", "role": "worker", "stage": 1, "bundle": DEMO_BUNDLE_DIR,
        "state_dir": str(tmp_path), "control_bind": EP[5651], "data_bind": EP[5652],
        "ack_timeout_s": 0.5,
        "peers": [{"id": "s1", "stage": 0, "control_address": EP[5641],
                   "data_address": EP[5642]},
                  {"id": "w2", "stage": 2, "control_address": EP[5661],
                   "data_address": EP[5662]},
                  {"id": "w3", "stage": 2, "control_address": EP[5671],
                   "data_address": EP[5672]}]})
    ctx = zmq.Context()
    transport = Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    view = build_view(cfg, load_bundle(DEMO_BUNDLE_DIR), None)
    view.alive.update({"s1", "w2", "w3"})
    yield Outbox(cfg, transport, AgentPolicy({1: 0.5, 2: 0.5, 3: 0.5}, {}), view,
                 Capacity(CapacityReport(1e8, 0.01, 1e8, "timed")))
    transport.close()
    ctx.term()


def _task(task_id: str) -> OutItem:
    return OutItem(Kind.TASK, task_id + "#0", {"id": task_id, "source": "s1", "stage": 2,
                                              "attempt": 0, "hops": 1, "resends": 0,
                                              "created": 0.0},
                   np.zeros((1, 8, 14, 14), dtype=np.float32), expires=1e9)


def _other(peer: str) -> str:
    return {"w2": "w3", "w3": "w2"}[peer]


def test_an_ack_from_a_peer_the_task_was_not_sent_to_leaves_its_custody_alone(out):
    """The task went to one successor; the other successor's and the source's ACKs of its key
    are counted per peer and ignored; the successor it went to ends custody."""
    item = _task("t1")
    out.send(item, 100.0)
    dest = item.dest
    assert dest in ("w2", "w3") and out.items == {"t1#0": item}
    out.on_ack(_other(dest), ["t1#0"], 100.1)
    out.on_ack("s1", ["t1#0"], 100.1)
    assert out.items == {"t1#0": item}
    assert out.counters["ack_not_sent_" + _other(dest)] == 1
    assert out.counters["ack_not_sent_s1"] == 1 and out.counters["acked"] == 0
    out.on_ack(dest, ["t1#0"], 100.2)
    assert out.items == {} and out.counters["acked"] == 1


def test_a_late_ack_from_the_first_destination_still_ends_custody_after_a_resend(out):
    """A task re-sent to the other successor after its ACK deadline may still be ACKed by the
    first one (it got the task, its ACK was late): that ends custody, as does the second's."""
    for task_id, acker in (("t1", "first"), ("t2", "second")):
        item = _task(task_id)
        out.send(item, 100.0)
        first = item.dest
        out.run_timers(101.0, lambda key, now: None)  # past its ACK deadline: re-sent
        assert item.tried == [first] and item.dest == _other(first)
        out.on_ack(first if acker == "first" else item.dest, [item.key], 101.1)
        assert item.key not in out.items
    assert out.counters["acked"] == 2 and not any(
        k.startswith("ack_not_sent_") for k in out.counters)


def test_a_result_ends_custody_only_by_its_sources_ack(out):
    """A result goes to its source; a successor naming its key does not end its custody."""
    result = OutItem(Kind.RESULT, "R:t1#0", {"id": "t1", "attempt": 0, "source": "s1",
                                            "exit_stage": 1, "cls": 1, "confidence": 0.9,
                                            "worker": "w1", "hops": 1, "resends": 0,
                                            "created": 0.0, "token": ""},
                     None, dest="s1", keep_until=130.0)
    out.send(result, 100.0)
    out.flush_results(100.0)
    out.on_ack("w2", ["R:t1#0"], 100.1)
    assert out.items == {"R:t1#0": result} and out.counters["ack_not_sent_w2"] == 1
    out.on_ack("s1", ["R:t1#0"], 100.2)
    assert out.items == {} and out.counters["acked"] == 1


def _scan(out) -> tuple:
    """``held`` the slow way: every task in custody or waiting, and their tensor bytes."""
    tasks = [i for i in out.items.values() if i.kind == Kind.TASK] + out.waiting
    return len(tasks), sum(i.nbytes for i in tasks)


def test_held_counts_stay_equal_to_a_scan_of_custody_through_sends_acks_resends_and_refusals(out):
    """``held`` is kept as items come and go (no scan per intake): after every step of a
    mixed sequence (sends, a resend, a refusal, ACKs, a cancel, a result) it equals a scan."""
    items = [_task("t%d" % k) for k in range(6)]
    for k, item in enumerate(items):
        out.send(item, 100.0 + k * 0.01)
        assert out.held() == _scan(out)
    assert out.held()[0] == 6 and out.held()[1] == 6 * items[0].nbytes
    out.run_timers(101.0, lambda key, now: None)  # past their ACK deadlines: re-sent
    assert out.held() == _scan(out) and out.held()[0] == 6
    out.on_ack(items[0].dest, [items[0].key], 101.1)
    out.on_ack(items[1].dest, [], 101.1, refused=[items[1].key], retry_s=0.5, reason="overload")
    assert out.held() == _scan(out)
    out.cancel(items[2].key)
    out.cancel("never-sent#0")
    assert out.held() == _scan(out) and out.held()[0] == 4
    out.send(OutItem(Kind.RESULT, "R:t9#0", {"id": "t9", "attempt": 0, "source": "s1",
                                             "exit_stage": 1, "cls": 1, "confidence": 0.9,
                                             "worker": "w1", "hops": 1, "resends": 0,
                                             "created": 0.0, "token": ""},
                     None, dest="s1", keep_until=130.0), 101.2)
    assert out.held() == _scan(out) and out.held()[0] == 4  # results are not tasks held
    for item in items[3:]:
        out.on_ack(item.dest, [item.key], 101.3)
    assert out.held() == _scan(out)


def test_custody_refuses_the_dict_methods_that_would_bypass_its_counts(out):
    """``update``, ``setdefault``, ``popitem`` and ``clear`` would change the items without
    the counts: they raise instead of drifting."""
    for call in (lambda: out.items.update({}), lambda: out.items.setdefault("k", None),
                 out.items.popitem, out.items.clear):
        with pytest.raises(TypeError):
            call()


def test_custody_fits_when_all_tasks_cross_the_slowest_positive_rate_in_time(out):
    """``fits``: every task held, framing included, against the slowest rate above zero of
    all the maps (a zero rate is no rate; no rate at all fits)."""
    item = _task("t1")
    out.items[item.key] = item
    need = out.items.task_wire_bytes
    assert need > item.nbytes
    assert out.items.fits(({}, {}), 1.0) and out.items.fits(({"w2": 0.0}, {}), 1.0)
    assert out.items.fits(({"w2": need}, {"w3": 10 * need}), 1.0)
    assert not out.items.fits(({"w2": 10 * need}, {"w3": need / 2, "w4": 0.0}), 1.0)
    del out.items[item.key]
    assert out.items.task_wire_bytes == 0 and out.items.fits(({"w2": 1.0}, {}), 1.0)
