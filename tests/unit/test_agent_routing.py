"""Agent-side policies: routing mass only on alive successors, cf/bf splits, DTO-EE message
checking and the configuration phase's rounds between an offloader and a receiver."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agent.config.node import NodeConfig, Peer
from agent.errors import UsageError
from agent.policies.api import NodeView, TaskInfo, default_thresholds
from agent.policies.dtoee import protocol as D
from agent.policies.dtoee.agent import DtoeePolicy
from agent.policies.dtoee.payload import from_payload, to_payload
from agent.policies.registry import make_policy
from agent.protocol.wire import Kind, Message


def _view(**over):
    v = NodeView(node_id="s1", role="source", stage=0, num_stages=2, stage_flops=(1e6, 2e6),
                 stage_input_bytes=(1000.0, 500.0), exit_stages=(1,), successors=("a", "b"),
                 predecessors=(), link_rate_bytes_s={"a": 1e6, "b": 3e6},
                 arrival_rate_tasks_s=10.0, alive={"a", "b"})
    for k, x in over.items():
        setattr(v, k, x)
    return v


def _choices(policy, view, n=400, exclude=()):
    out = {}
    for i in range(n):
        s = policy.choose_successor(TaskInfo(str(i), 1, 100), view, exclude)
        out[s] = out.get(s, 0) + 1
    return out


def test_fixed_routing_uses_only_alive_successors_and_moves_mass_off_gone_ones():
    p = make_policy("fixed", {1: 0.8}, {"routing": {"a": 3.0, "b": 1.0}})
    v = _view()
    got = _choices(p, v)
    assert got["a"] > got["b"] > 0
    v.alive = {"b"}
    assert _choices(p, v) == {"b": 400}
    v.alive = set()
    assert p.choose_successor(TaskInfo("t", 1, 1), v) is None


def test_resend_prefers_a_successor_not_tried_yet():
    """A re-sent task goes to a successor not tried yet; once all were tried, to any alive one
    (both get some of 400 tasks), never to a gone one."""
    p = make_policy("fixed", {}, {})
    assert _choices(p, _view(), exclude=("a",)) == {"b": 400}
    got = _choices(p, _view(), exclude=("a", "b"))  # all tried: any alive
    assert set(got) == {"a", "b"} and min(got.values()) > 100
    assert _choices(p, _view(alive={"a"}), exclude=("a", "b")) == {"a": 400}


def test_huge_or_infinite_weights_still_route():
    """Weights whose sum is not finite (two peers announcing a capacity of 1e308, an infinite
    one) still give a successor: scaled, or the infinite ones alone (random.choices raised on
    the infinite total, and the task being routed was lost); a NaN weight counts 0."""
    cf = make_policy("cf", {}, {})
    v = _view(peer_state={"a": {"capacity_flops": 1e308}, "b": {"capacity_flops": 1e308}})
    got = _choices(cf, v)
    assert set(got) == {"a", "b"} and min(got.values()) > 100
    v.peer_state["a"]["capacity_flops"] = float("inf")
    assert _choices(cf, v) == {"a": 400}
    v.peer_state["a"]["capacity_flops"] = float("nan")
    assert _choices(cf, v) == {"b": 400}


def test_fixed_routing_knob_is_validated():
    with pytest.raises(UsageError, match="policy_knobs.routing"):
        make_policy("fixed", {}, {"routing": {"a": -1}})


def test_a_fixed_weight_for_a_node_that_is_no_successor_is_a_start_up_fault():
    """Rule: ``routing = {w9 = 1.0}`` where the successors are a and b is refused when the
    node configures its policy (run exits 78 on it), naming the misspelt id and the
    successors; misspelt, every successor had weighed 0 and the node routed uniformly while
    its stats showed the table."""
    p = make_policy("fixed", {}, {"routing": {"a": 1.0, "w9": 1.0}})
    with pytest.raises(UsageError, match=r"^policy_knobs.routing: w9 is no successor of this "
                       r"node \(its successors: a, b\)$"):
        p.configure(SimpleNamespace(), _view())
    make_policy("fixed", {}, {"routing": {"a": 1.0}}).configure(SimpleNamespace(), _view())


def test_cf_splits_by_announced_capacity_and_bf_by_link_rate():
    v = _view(peer_state={"a": {"capacity_flops": 1e6}, "b": {"capacity_flops": 9e6}})
    cf, bf = make_policy("cf", {}, {}), make_policy("bf", {}, {})
    cf.choose_successor(TaskInfo("t", 1, 1), v)
    bf.choose_successor(TaskInfo("t", 1, 1), v)
    assert cf.routing() == pytest.approx({"a": 0.1, "b": 0.9})
    assert bf.routing() == pytest.approx({"a": 0.25, "b": 0.75})


def test_default_thresholds_cover_exit_stages_only():
    assert default_thresholds((1, 3), (0.5, 1.0, 0.7, 1.0)) == {1: 0.5, 3: 0.7}
    assert default_thresholds((1,), ()) == {1: 0.8}


def test_dtoee_payloads_are_type_checked():
    """A message survives the wire unchanged ({stage: c} inside, {"stage": c} on the wire);
    a wrong type, an extra field, a bad threshold or stage key, a negative round are refused."""
    req = D.Request("s1", 0, 5.0, {1: 0.8}, 0)
    assert to_payload(req)["thresholds"] == {"1": 0.8}
    assert from_payload(D.Request, to_payload(req)) == req
    for bad in (dict(to_payload(req), flops_s="x"), dict(to_payload(req), extra=1),
                dict(to_payload(req), thresholds={"1": 7.0}),
                dict(to_payload(req), thresholds={"one": 0.8}), dict(to_payload(req), round=-1)):
        with pytest.raises(ValueError):
            from_payload(D.Request, bad)


def _cfg(node_id, stage, peers):
    return NodeConfig(node_id=node_id, role="source" if stage == 0 else "worker", stage=stage,
                      bundle="/b", state_dir="/s", control_bind="tcp://127.0.0.1:1",
                      data_bind="tcp://127.0.0.1:2", peers=tuple(peers), slot_length_s=1.0,
                      rounds_per_slot=10, round_interval_s=0.01)


def test_dtoee_rounds_between_source_and_receivers_shift_mass_to_the_faster_one():
    """The source's requests and the workers' statuses, exchanged in memory through the same
    callbacks the node loop uses, move the source's routing towards the faster worker, and the
    new routing is only used once the configuration phase ends."""
    peer = lambda i, h: Peer(i, h, "tcp://x:1", "tcp://x:2", 1e7)  # noqa: E731
    every_round = {"settle_rounds": 0}  # no early end: the phase lasts its 10 rounds
    src = DtoeePolicy({1: 0.8}, every_round)
    src.configure(_cfg("s1", 0, [peer("a", 1), peer("b", 1)]), _view())
    workers, views = {}, {}
    for wid, mu in (("a", 2e7), ("b", 2e8)):
        # stand-alone receivers: workers of the last stage of a one-stage view (no successors)
        w = DtoeePolicy({1: 0.8}, every_round)
        wv = _view(node_id=wid, role="worker", stage=1, num_stages=1, successors=(),
                   predecessors=("s1",), alive={"s1"}, capacity_flops=mu,
                   arrival_rate_tasks_s=0.0)
        w.configure(_cfg(wid, 1, [peer("s1", 0)]), wv)
        workers[wid], views[wid] = w, wv
    clock = [100.0]
    for p in [src] + list(workers.values()):
        p.wall = lambda: clock[0]
    sv = _view()
    out = src.on_tick(sv, 0.0)
    assert src.configuring and src.routing() == {"a": 0.5, "b": 0.5}
    for _ in range(10):
        statuses = []
        for o in out:
            assert o.kind == Kind.DTOEE_REQUEST
            msg = Message(o.kind, "s1", o.slot, o.round, o.fields)
            statuses += workers[o.dest].on_control(msg, views[o.dest], 0.0)
        out = []
        for st in statuses:
            assert st.kind == Kind.DTOEE_STATUS
            msg = Message(st.kind, st.fields["payload"]["sender"], st.slot, st.round, st.fields)
            out += src.on_control(msg, sv, 0.0)
    assert src.routing() == {"a": 0.5, "b": 0.5}  # serving still uses the old routing
    assert src.work["b"] > src.work["a"]
    src.on_tick(sv, 10.0)  # past the configuration phase
    assert src.routing()["b"] > src.routing()["a"]


def test_dtoee_ignores_requests_from_a_far_future_slot():
    w = DtoeePolicy({1: 0.8}, {})
    wv = _view(node_id="a", role="worker", stage=1, successors=(), predecessors=("s1",),
               alive={"s1"})
    w.configure(_cfg("a", 1, [Peer("s1", 0, "tcp://x:1", "tcp://x:2")]), wv)
    w.wall = lambda: 100.0
    req = to_payload(D.Request("s1", 0, 5.0, {1: 0.8}, 0))
    with pytest.raises(ValueError):
        w.on_control(Message(Kind.DTOEE_REQUEST, "s1", 10 ** 6, 0, {"to": "a", "payload": req}),
                     wv, 0.0)


def test_dtoee_state_survives_a_restart():
    """snapshot() is what the node saves each slot; restore() at start-up takes it back."""
    peers = [Peer("a", 1, "tcp://x:1", "tcp://x:2"), Peer("b", 1, "tcp://x:3", "tcp://x:4")]
    old = DtoeePolicy({1: 0.7}, {})
    old.configure(_cfg("s1", 0, peers), _view())
    old.restore({"routing": {"a": 0.25, "b": 0.75}})  # the routing a past phase settled on
    assert old.routing() == {"a": 0.25, "b": 0.75} and old.thresholds() == {1: 0.7}
    new = DtoeePolicy({1: 0.8}, {})
    new.configure(_cfg("s1", 0, peers), _view())
    new.restore(old.snapshot())
    assert new.routing() == {"a": 0.25, "b": 0.75} and new.thresholds() == {1: 0.7}
    new.restore({"routing": {"a": "junk"}, "thresholds": {"1": 5.0}})  # ignored, not a crash
    assert new.routing() == {"a": 0.25, "b": 0.75} and new.thresholds() == {1: 0.7}
