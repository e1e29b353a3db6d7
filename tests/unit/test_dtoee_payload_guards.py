"""DTO-EE against hostile but wire-valid peer messages: each is refused with a ValueError (the
node loop counts it as a bad payload) and the phase still completes on every node with a finite
routing, so one bad message cannot poison the fleet's phase.

The fleet is the one of ``test_dtoee_agent_rounds`` (policy objects exchanging encoded
messages); ``_run`` delivers as ``_run_phase`` does and lets a test rewrite a message's payload
on its way (re-encoded, so it is still wire-valid), counting what on_control raises as the node
loop does.
"""

from __future__ import annotations

import math
from collections import Counter, deque

import pytest

from agent.policies.dtoee import protocol as D
from agent.policies.dtoee.payload import MAX_ABS, MAX_INT, from_payload, to_payload
from agent.policies.model import with_link_model
from agent.policies.thresholds import ThresholdReport
from agent.protocol.wire import Kind, decode, encode
from tests.unit.test_dtoee_agent_rounds import _deliver, _fleet, _scenario, _with_profile

ROUNDS = 20
PROFILED = {"settle_rounds": 0, "link_model": "delay"}  # the threshold tests' setting


def _profiled():
    """The scenario with an early exit at stage 2 (its workers decide C), as in the threshold
    tests of test_dtoee_agent_rounds."""
    return with_link_model(_with_profile(_scenario(3, 0.85), (2, 3), 0.5), "delay")


def _run(mutate, rounds=ROUNDS, sc=None, thresholds=None, knobs=None):
    """One phase; ``mutate(dest, msg) -> bool`` may rewrite ``msg.fields["payload"]`` (True:
    it did). Returns (nodes, the errors on_control raised as (dest, message) per count)."""
    nodes = _fleet(sc or _scenario(3, 0.85), rounds, thresholds,
                   knobs or {"settle_rounds": 0})
    queue, errors, now = deque(), Counter(), 0.0
    for n, (pol, view) in nodes.items():
        _deliver(nodes, n, pol.on_tick(view, 0.0), queue)
    for _ in range(200000):
        if not queue:
            if all(p.round >= rounds for p, _ in nodes.values() if p.offloader) or now > 8 * rounds:
                break
            now += 2.0  # past round_interval_s: a round waiting for a refused message goes on
            for n, (pol, view) in nodes.items():
                _deliver(nodes, n, pol.on_tick(view, now), queue)
            continue
        dest, frames = queue.popleft()
        msg = decode(frames)
        if mutate(dest, msg):
            msg = decode([bytes(f) for f in encode(msg.kind, msg.sender, msg.fields,
                                                   slot=msg.slot, round=msg.round)])
        pol, view = nodes[dest]
        try:
            _deliver(nodes, dest, pol.on_control(msg, view, now), queue)
        except ValueError as exc:  # the node loop's bad_payload
            errors[(dest, str(exc))] += 1
    for pol, _ in nodes.values():
        if pol.configuring:
            pol._finish_phase()
    return nodes, errors


def _once(kind, sender, change, to=""):
    """A ``mutate`` that applies ``change(payload)`` to the first ``kind`` message of
    ``sender`` to a node whose id starts with ``to``, and leaves the rest alone."""
    done = []

    def mutate(dest, msg):
        if done or msg.kind != kind or msg.sender != sender or not dest.startswith(to):
            return False
        change(msg.fields["payload"])
        done.append(dest)
        return True
    return mutate, done


def _completed(nodes, rounds=ROUNDS):
    """Every offloader took all rounds and holds a finite routing that sums to 1."""
    for n, (pol, _) in nodes.items():
        if not pol.offloader:
            continue
        assert pol.round >= rounds, n
        assert all(isinstance(p, float) and math.isfinite(p) and p >= 0
                   for p in pol.active.values()), (n, pol.active)
        assert sum(pol.active.values()) == pytest.approx(1.0), n


@pytest.mark.parametrize("field,value", [
    ("capacity_flops_s", 0.0), ("capacity_flops_s", -1e11), ("capacity_flops_s", 1e-30),
    ("load_flops_s", -1.0), ("load_flops_s", 1e308), ("curvature_s2", -1.0),
    ("curvature_s2", -1e308), ("damping", 0.5), ("damping", 1e308), ("omega_s", -1e308)])
def test_status_out_of_range_is_refused(field, value):
    """Rule: a status whose capacity is below 1 FLOP/s, whose load or curvature is negative,
    whose damping is below 1, or any of whose numbers exceeds 1e30 in magnitude, is refused
    (ValueError naming the field) and not used; the phase completes everywhere."""
    mutate, done = _once(Kind.DTOEE_STATUS, "c0", lambda p: p.update({field: value}))
    nodes, errors = _run(mutate)
    [(dest, text)] = list(errors)
    assert dest == done[0] and "Status.%s" % field in text and errors[(dest, text)] == 1
    _completed(nodes)


@pytest.mark.parametrize("value", [-1.0, -1e308, 1e308])
def test_request_out_of_range_is_refused(value):
    """Rule: a request whose xi (flops_s) is negative or above 1e30 is refused; the receiver's
    load never takes it and the phase completes everywhere."""
    mutate, done = _once(Kind.DTOEE_REQUEST, "s0", lambda p: p.update(flops_s=value))
    nodes, errors = _run(mutate)
    assert len(errors) == 1 and "Request.flops_s" in next(iter(errors))[1]
    _completed(nodes)
    pol = nodes[done[0]][0]
    assert 0 <= pol.own_status.load_flops_s < 1e15


@pytest.mark.parametrize("field,value", [("capacity_flops_s", 1.0), ("load_flops_s", 1e30),
                                         ("curvature_s2", 1e30), ("omega_s", -1e30),
                                         ("damping", 1e30)])
def test_extreme_but_valid_statuses_never_make_honest_messages_bad(field, value):
    """Rule: values at the edge of the ranges, sent in every status of one node, are taken,
    and the larger numbers they cause downstream are sent clamped to 1e30, so no honest
    node's message is refused and every routing stays finite."""
    def mutate(dest, msg):
        if msg.kind == Kind.DTOEE_STATUS and msg.sender == "c0":
            msg.fields["payload"][field] = value
            return True
        return False
    nodes, errors = _run(mutate)
    assert errors == Counter()
    _completed(nodes)


def test_request_with_extreme_load_is_relayed_within_bounds():
    """Rule: requests of 1e30 FLOP/s from one source are taken; the receivers' statuses and
    requests built on them are sent clamped to 1e30, and nobody refuses them."""
    def mutate(dest, msg):
        if msg.kind == Kind.DTOEE_REQUEST and msg.sender == "s0":
            msg.fields["payload"]["flops_s"] = 1e30
            return True
        return False
    for knobs in ({"settle_rounds": 0}, {"settle_rounds": 0, "step": "joint"}):
        nodes, errors = _run(mutate, knobs=knobs)
        assert errors == Counter()
        _completed(nodes)


def test_a_sent_float_is_clamped_and_nan_stays_refused():
    """Rule: a node's own value beyond 1e30 goes out as +-1e30 (taken by its peers); NaN goes
    out as is and is refused."""
    st = D.Status("b0", 3, 1e40, 1e10, -1e40, 1e50, 2, {}, 0)
    back = from_payload(D.Status, to_payload(st))
    assert (back.load_flops_s, back.omega_s, back.curvature_s2) == (MAX_ABS, -MAX_ABS, MAX_ABS)
    with pytest.raises(ValueError, match="omega_s"):
        from_payload(D.Status, to_payload(D.Status("b0", 3, 1.0, 1e10, math.nan, 0.0, 2, {}, 0)))


@pytest.mark.parametrize("field,value", [("thresholds_version", 2 ** 64 - 1),
                                         ("thresholds_version", MAX_INT),
                                         ("round", 2 ** 64 - 1), ("quiet", MAX_INT)])
def test_ints_from_2_53_are_refused(field, value):
    """Rule: an int in a DTO-EE message (round, quiet, version) of 2**53 or more is refused at
    decode: a version of 2**64-1, adopted, would make the next one unencodable and every later
    message of the node fail."""
    mutate, _ = _once(Kind.DTOEE_REQUEST, "s0", lambda p: p.update({field: value}))
    nodes, errors = _run(mutate, sc=_profiled(), thresholds={2: 0.8}, knobs=PROFILED)
    assert len(errors) == 1 and "Request.%s" % field in next(iter(errors))[1]
    assert all(p.tsync.version < 100 for p, _ in nodes.values())
    _completed(nodes)


def test_a_version_just_below_the_refused_one_is_not_taken_and_messages_keep_flowing():
    """Rule: a version of 2**40 - 1 passes the check but is not adopted (2**39 or more is
    not): adopted, the node's next decision would make 2**40, which its peers refuse, and the
    fleet's messages would stop instead."""
    mutate, _ = _once(Kind.DTOEE_REQUEST, "s0",
                      lambda p: p.update(thresholds_version=2 ** 40 - 1))
    nodes, errors = _run(mutate, sc=_profiled(), thresholds={2: 0.8}, knobs=PROFILED)
    assert errors == Counter()
    assert all(p.tsync.version < 100 for p, _ in nodes.values())
    assert len({tuple(sorted(p.tsync.th.items())) for p, _ in nodes.values()}) == 1
    _completed(nodes)


@pytest.mark.parametrize("version", [2 ** 40, MAX_INT - 1])
def test_a_version_no_decision_reaches_is_refused_and_the_nodes_keep_agreeing(version):
    """Rule: a version of C at 2**40 or more (no fleet makes that many decisions) is refused.
    Taken, one message of 2**53 - 1 had left every node at the wire's bound, where no node's
    later decision was newer than any other's: the siblings' thresholds drifted apart for good,
    and the saved state kept it across restarts."""
    mutate, _ = _once(Kind.DTOEE_REQUEST, "s0", lambda p: p.update(thresholds_version=version))
    nodes, errors = _run(mutate, sc=_profiled(), thresholds={2: 0.8}, knobs=PROFILED)
    assert len(errors) == 1 and "thresholds_version" in next(iter(errors))[1]
    assert all(p.tsync.version < 100 for p, _ in nodes.values())
    assert len({tuple(sorted(p.tsync.th.items())) for p, _ in nodes.values()}) == 1
    _completed(nodes)


def test_a_version_ahead_but_in_range_is_taken_and_later_decisions_still_spread():
    """Rule: a newer version within range is taken (a node that restarted with its state lost
    catches up at once), and the decisions after it are newer still, so every node keeps the
    same C."""
    mutate, _ = _once(Kind.DTOEE_REQUEST, "s0", lambda p: p.update(
        thresholds_version=p["thresholds_version"] + 1000))
    nodes, errors = _run(mutate, sc=_profiled(), thresholds={2: 0.8}, knobs=PROFILED)
    assert errors == Counter()
    assert all(p.tsync.version >= 1000 for p, _ in nodes.values())
    assert len({tuple(sorted(p.tsync.th.items())) for p, _ in nodes.values()}) == 1
    _completed(nodes)


@pytest.mark.parametrize("kind,sender", [(Kind.DTOEE_REQUEST, "s0"), (Kind.DTOEE_STATUS, "c0")])
@pytest.mark.parametrize("thresholds", [{}, {"2": 0.8, "99": 0.5}, {"3": 0.8}, {"2": 0.0},
                                        {"2": 1.5}])
def test_thresholds_for_other_stages_or_out_of_range_are_refused(kind, sender, thresholds):
    """Rule: a request or status whose C names other stages than the node's own (one missing,
    one extra) or holds a value outside (0, 1] is refused, even under a newer version, instead
    of being merged: every node keeps C for exactly its exit stages."""
    def change(p):
        p.update(thresholds=thresholds, thresholds_version=p["thresholds_version"] + 5)
    mutate, _ = _once(kind, sender, change)
    nodes, errors = _run(mutate, rounds=30, sc=_profiled(), thresholds={2: 0.8}, knobs=PROFILED)
    assert len(errors) == 1
    assert all(set(p.tsync.th) == {2} and 0 < p.tsync.th[2] <= 1 for p, _ in nodes.values())
    _completed(nodes, 30)


def test_merge_refuses_a_map_of_other_stages():
    """Rule: merge_thresholds raises ValueError for a message whose map has other stages,
    whatever its version, and keeps the newest of maps that fit."""
    newer = D.Request("s0", 0, 1.0, {2: 0.7}, 4)
    assert D.merge_thresholds({2: 0.8}, 1, [newer]) == ({2: 0.7}, 4)
    for th in ({}, {2: 0.7, 3: 0.9}, {3: 0.7}):
        with pytest.raises(ValueError, match="stages"):
            D.merge_thresholds({2: 0.8}, 1, [D.Request("s0", 0, 1.0, th, 0)])


def test_threshold_reports_past_the_phase_are_refused_and_not_kept():
    """Rule: a sibling's threshold report for a round past the phase is refused, and none is
    kept, so a flood of them does not grow the node's memory until the next slot."""
    nodes = _fleet(_profiled(), 30, {2: 0.8}, PROFILED)
    pol, view = nodes["b0"]
    pol.on_tick(view, 0.0)
    refused = 0
    for r in range(2000):
        rep = ThresholdReport("b1", 30 + r * 1000, 2, 1.0, 1.0)
        msg = decode([bytes(f) for f in encode(Kind.THRESHOLD, "b1",
                                               {"payload": to_payload(rep)}, slot=0, round=0)])
        with pytest.raises(ValueError, match="round"):
            pol.on_control(msg, view, 1.0)
        refused += 1
    assert refused == 2000 and pol.tsync.reports == {}


@pytest.mark.parametrize("kind,knobs", [(Kind.THRESHOLD, PROFILED),
                                        (Kind.DTOEE_STAGE, dict(PROFILED, step="joint"))])
def test_a_report_for_a_far_round_is_refused_and_the_phase_completes(kind, knobs):
    """Rule: a real threshold or stage report rewritten to a round far past the phase is
    refused, not kept; its sender's round goes on after the stall and every node completes."""
    # to a sibling (b0, b2): a broadcast report reaches the predecessors too, who ignore it
    mutate, done = _once(kind, "b1", lambda p: p.update(round=10 ** 12), to="b")
    nodes, errors = _run(mutate, rounds=30, sc=_profiled(), thresholds={2: 0.8}, knobs=knobs)
    assert done and len(errors) == 1 and "round" in next(iter(errors))[1]
    assert all(r < 30 for p, _ in nodes.values() for r in p.tsync.reports)
    assert all(r < 30 for p, _ in nodes.values() for r in p.joint.reports)
    _completed(nodes, 30)


def test_a_negative_threshold_report_rate_is_refused():
    """Rule: a sibling's threshold report with a negative arrival rate (it would flip the sign
    of eq. 17's delay change) is refused."""
    mutate, _ = _once(Kind.THRESHOLD, "b1", lambda p: p.update(arrival_rate_tasks_s=-5.0),
                      to="b")
    nodes, errors = _run(mutate, rounds=30, sc=_profiled(), thresholds={2: 0.8}, knobs=PROFILED)
    assert len(errors) == 1 and "arrival rate" in next(iter(errors))[1]
    _completed(nodes, 30)


@pytest.mark.parametrize("change,why", [({"sender": "b2"}, "sent by"), ({"stage": 3}, "stage 3")])
def test_a_threshold_report_for_another_sibling_or_stage_is_refused(change, why):
    """Rule: a threshold report counts only as its sender's own and for the receiver's stage:
    one naming another sibling (it would stand in for that sibling's report in the decision)
    or another stage is refused, and the phase completes everywhere."""
    mutate, done = _once(Kind.THRESHOLD, "b1", lambda p: p.update(change), to="b")
    nodes, errors = _run(mutate, rounds=30, sc=_profiled(), thresholds={2: 0.8}, knobs=PROFILED)
    assert done and len(errors) == 1 and why in next(iter(errors))[1]
    _completed(nodes, 30)


@pytest.mark.parametrize("kind,sender", [(Kind.DTOEE_REQUEST, "a0"), (Kind.DTOEE_STATUS, "c0")])
def test_a_request_or_status_for_a_far_round_is_refused_and_later_ones_count(kind, sender):
    """Rule: a request or status rewritten to a round past the phase is refused, so it cannot
    stand for its sender's messages of the rounds left: the phase completes everywhere."""
    mutate, done = _once(kind, sender, lambda p: p.update(round=10 ** 12))
    nodes, errors = _run(mutate)
    assert done and len(errors) == 1 and "round" in next(iter(errors))[1]
    for pol, _ in nodes.values():
        heard = pol.neighbours
        assert all(r < ROUNDS for r in list(heard.request_round.values())
                   + list(heard.status_round.values()))
    _completed(nodes)
