"""DTO-EE in the agent under a sibling's faults around a threshold decision: a worker that hangs
for a few rounds (SIGSTOP, then SIGCONT: its inbox is delivered late, in order) or restarts (a
fresh policy object, messages in flight to it lost) in the rounds where its stage decides C.
Every node still ends its phase by its time and every node ends with the same thresholds and
version; and every end of a phase leaves one log line (INFO for a cut-short one at the 1st,
10th, 100th ... time, DEBUG otherwise), so a phase that ran all its rounds can be told from one
that settled. The nodes' policy objects exchange their control messages encoded on the wire
format, as in ``test_dtoee_agent_rounds``; a stall is the harness's tick past
``round_interval_s`` when no message is left to deliver."""

from __future__ import annotations

import dataclasses
from collections import deque

import pytest

from agent.protocol.wire import decode
from tests.unit.test_dtoee_agent_rounds import _deliver, _fleet, _scenario, _with_profile

ROUNDS = 60  # the harness's round_interval_s is 1 s and its wall clock 5 s into the slot
PHASE_END_S = ROUNDS * 1.0 - 5.0  # when the phase's time runs out, from the harness's start
STALL_S = 2.0  # one stall tick: past round_interval_s


def _phase_with_fault(victim, at_round, mode, knobs, hold_stalls=2):
    """One phase on the 3-stage test network with exits after stages 1 and 2 (thresholds
    tuned every m rounds); once every offloader has reached ``at_round``, ``victim`` hangs
    for ``hold_stalls`` stall ticks (``mode`` "stop": what reaches it waits, it ticks not) or
    restarts (``mode`` "restart": a fresh policy object that knows no neighbour alive until a
    message of theirs arrives). Returns the nodes and the harness time the phase ended at."""
    sc = _with_profile(_scenario(3, 0.85), (1, 2, 3), 1.0)
    th = {1: 0.8, 2: 0.8}
    nodes = _fleet(sc, ROUNDS, th, knobs)
    queue, held = deque(), deque()
    for n, (pol, view) in nodes.items():
        _deliver(nodes, n, pol.on_tick(view, 0.0), queue)
    now, stalls, hit, resume_at = 0.0, 0, False, 0

    def stopped(n):
        return mode == "stop" and hit and n == victim and stalls < resume_at

    for _ in range(10 ** 6):
        if not hit and min(p.round for p, _ in nodes.values() if p.offloader) >= at_round:
            hit, resume_at = True, stalls + hold_stalls
            if mode == "restart":
                view = dataclasses.replace(nodes[victim][1], alive=set())
                fresh = _fleet(sc, ROUNDS, th, knobs)[victim][0]
                nodes[victim] = (fresh, view)
                for item in [x for x in queue if x[0] == victim]:
                    queue.remove(item)
                _deliver(nodes, victim, fresh.on_tick(view, now), queue)
        if not queue:
            if not any(p.configuring for p, _ in nodes.values()) or now > 10 * PHASE_END_S:
                break
            stalls += 1
            now += STALL_S
            if not stopped(victim):
                queue.extend(held)  # SIGCONT: its inbox, in the order it came
                held.clear()
            for n, (pol, view) in nodes.items():
                if not stopped(n):
                    _deliver(nodes, n, pol.on_tick(view, now), queue)
            continue
        dest, frames = queue.popleft()
        if stopped(dest):
            held.append((dest, frames))
            continue
        msg = decode(frames)
        if mode == "restart" and hit and dest == victim:
            nodes[victim][1].alive.add(msg.sender)  # what the node loop does first
        pol, view = nodes[dest]
        _deliver(nodes, dest, pol.on_control(msg, view, now), queue)
    assert hit
    return nodes, now


@pytest.mark.parametrize("step", ["default", "joint"])
@pytest.mark.parametrize("mode,victim,at_round", [
    ("stop", "a1", 0), ("stop", "a1", 15), ("stop", "b1", 5),
    ("restart", "a1", 15), ("restart", "b1", 5), ("stop", "s1", 5)])
def test_a_sibling_hung_or_restarted_at_a_threshold_decision_leaves_one_c(step, mode, victim,
                                                                           at_round):
    """Rule: a worker that hangs for two stalled rounds or restarts in a round where its stage
    decides C (stage 1 decides at rounds 0, 15, ..., stage 2 at 5, 20, ...; a source as the
    victim under the joint step's stage reports) delays its neighbours by stalls only: every
    node ends its phase by the phase's time, and every node holds the same thresholds under
    the same version (the newest version wins; the siblings decide on the same reports)."""
    knobs = {} if step == "default" else {"step": "joint"}
    nodes, ended_s = _phase_with_fault(victim, at_round, mode, knobs)
    assert not [n for n, (p, _) in nodes.items() if p.configuring]
    assert ended_s <= PHASE_END_S + STALL_S
    held = {(tuple(sorted(p.tsync.th.items())), p.tsync.version) for p, _ in nodes.values()}
    assert len(held) == 1, held


def test_every_phase_end_leaves_one_line_debug_unless_logged_at_info(caplog):
    """Rule: a phase that ran all its rounds, and a cut-short one not logged at INFO (the first
    after start, or one between the 1st, 10th, 100th ...), leave one DEBUG line naming the slot,
    how it ended and the rounds run (a settled one has its own DEBUG line), so per-slot outcomes
    can be read from a DEBUG log; INFO keeps one line per decade of cut-short phases."""
    from agent.policies.dtoee.settle import Settle

    s = Settle(0.01)
    s.configure(8, 16)
    with caplog.at_level("DEBUG", logger="agent.policies.dtoee.agent"):
        s.start(0)
        assert s.ended(10, 0, 30) == "cut_short"  # the first after start: DEBUG only
        s.start(0)
        assert s.ended(11, 30, 30) == "all_rounds"
        s.start(0)
        assert s.ended(12, 7, 30) == "cut_short"  # the 1st counted: INFO
        s.start(0)
        assert s.ended(13, 9, 30) == "cut_short"  # the 2nd: DEBUG
    got = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert got == [
        ("DEBUG", "configuration phase of slot 10 ended (cut_short) after 0 of 30 rounds"),
        ("DEBUG", "configuration phase of slot 11 ended (all_rounds) after 30 of 30 rounds"),
        ("INFO", "configuration phase of slot 12 ended after 7 of 30 rounds (a neighbour late "
                 "or gone; 2 phase(s) cut short so far)"),
        ("DEBUG", "configuration phase of slot 13 ended (cut_short) after 9 of 30 rounds"),
    ]
    assert s.ends == {"settled": 0, "all_rounds": 1, "cut_short": 3}
