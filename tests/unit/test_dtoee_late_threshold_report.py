"""DTO-EE's threshold decision with a sibling's report that comes late: a node that went on
without it (its round stalled) and has since taken its siblings' decision through the merge
does not decide that round again, so the stage's C moves once per decision and every node
ends the phase with the same thresholds."""

from __future__ import annotations

from collections import Counter, deque

from agent.protocol.wire import Kind, decode
from tests.unit.test_dtoee_agent_rounds import _deliver, _fleet, _scenario, _with_profile

ROUNDS, LATE_ROUND = 40, 10  # round 10 is a decision round of stage 2 (m = 5, exits 2 and 3)


def _phase_with_late_report(late: bool):
    """One phase; with ``late``, b1's threshold report of LATE_ROUND reaches b0 only once the
    phase's other messages are all delivered (b0's round stalls, its siblings decide). Returns
    {node: (version, thresholds)} at the end and b0's (version, C) after each change."""
    sc = _with_profile(_scenario(3, 0.85), (2, 3), 1.0)
    nodes = _fleet(sc, ROUNDS, {2: 0.8}, knobs={"settle_rounds": 0})
    queue, parked, released = deque(), [], False
    for n, (pol, view) in nodes.items():
        _deliver(nodes, n, pol.on_tick(view, 0.0), queue)
    now, seen = 0.0, []
    for _ in range(100000):
        if not queue:
            done = all(p.round >= ROUNDS for p, _ in nodes.values() if p.offloader)
            if done and parked:
                queue.extend(parked)
                parked, released = [], True
                continue
            if done:
                break
            now += 2.0  # past round_interval_s: every waiting node's round stalls
            for n, (pol, view) in nodes.items():
                _deliver(nodes, n, pol.on_tick(view, now), queue)
            continue
        dest, frames = queue.popleft()
        msg = decode(frames)
        if (late and not released and msg.kind == Kind.THRESHOLD and dest == "b0"
                and msg.sender == "b1" and msg.round == LATE_ROUND):
            parked.append((dest, frames))
            continue
        pol, view = nodes[dest]
        _deliver(nodes, dest, pol.on_control(msg, view, now), queue)
        if dest == "b0" and (not seen or seen[-1] != (pol.tsync.version, pol.tsync.th[2])):
            seen.append((pol.tsync.version, pol.tsync.th[2]))
    assert released == late  # the late report really came, after the phase's rounds
    return {n: (p.tsync.version, dict(p.tsync.th)) for n, (p, _) in nodes.items()}, seen


def test_a_late_sibling_report_does_not_move_c_again_after_the_siblings_decision():
    """Rule: a threshold report that comes after the node took its siblings' decision of that
    round (through a merge) is not decided again: all nodes end with the same version and C,
    the ones of a phase in which no report was late, and C moved by one step per decision."""
    on_time, _ = _phase_with_late_report(False)
    late, seen = _phase_with_late_report(True)
    assert len(Counter(str(v) for v in on_time.values())) == 1
    assert late == on_time
    versions = [v for v, _ in seen]
    assert versions == sorted(set(versions))  # one C per version at b0, none skipped
    steps = [round(abs(b[1] - a[1]), 9) for a, b in zip(seen, seen[1:])]
    assert steps and len(set(steps)) == 1  # every change of C at b0: one threshold_step
