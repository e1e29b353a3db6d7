"""DTO-EE in the agent: a worker that restarts in the middle of a configuration phase (a new
policy object, nothing heard, round 0) takes part in its neighbours' current round at once, so
they do not wait out ``round_interval_s`` for it round after round. The nodes' policy objects
exchange their control messages encoded on the wire format, as in
``test_dtoee_agent_rounds``; a stall is the harness's tick past ``round_interval_s`` when no
message is left to deliver."""

from __future__ import annotations

import dataclasses
from collections import deque

import pytest

from agent.protocol.wire import Kind, decode
from tests.unit.test_dtoee_agent_rounds import _deliver, _fleet, _scenario

ROUNDS = 200


def _phase_with_restart(victim, at_round, lose_first_request=False, rounds=ROUNDS):
    """Run a phase of ``rounds`` rounds on the 3-stage test network (settle_rounds 0, so every
    round runs); once every offloader has reached ``at_round``, ``victim`` restarts: a fresh
    policy object takes its place, and the messages then on their way to it are lost. With
    ``lose_first_request`` the restart happens instead when the first request of round
    ``at_round`` or later reaches it (that one and the others in flight lost: the restart lands
    inside a round). As in the node loop, the restarted node knows no neighbour alive until a
    message of theirs arrives. Returns (stall ticks after the restart, the nodes, (round,
    load) of each status the restarted victim sent on a message, {(sender, round): FLOP/s} of the requests
    it got after it)."""
    sc = _scenario(3, 0.85)
    nodes = _fleet(sc, rounds)
    queue = deque()
    for n, (pol, view) in nodes.items():
        _deliver(nodes, n, pol.on_tick(view, 0.0), queue)
    now, stalls, restarted, answered, asked = 0.0, 0, False, [], {}

    def restart():
        view = dataclasses.replace(nodes[victim][1], alive=set())
        fresh = _fleet(sc, rounds)[victim][0]
        nodes[victim] = (fresh, view)
        for item in [x for x in queue if x[0] == victim]:
            queue.remove(item)
        _deliver(nodes, victim, fresh.on_tick(view, now), queue)

    for _ in range(10 ** 6):
        offloaders = [p.round for p, v in nodes.values() if p.offloader]
        if not restarted and not lose_first_request and min(offloaders) >= at_round:
            restart()
            restarted = True
        if not queue:
            if min(offloaders) >= rounds:
                break
            stalls += restarted
            now += 2.0  # past round_interval_s: every node's round has stalled
            for n, (pol, view) in nodes.items():
                _deliver(nodes, n, pol.on_tick(view, now), queue)
            continue
        dest, frames = queue.popleft()
        msg = decode(frames)
        if (not restarted and lose_first_request and dest == victim
                and msg.kind == Kind.DTOEE_REQUEST and msg.round >= at_round):
            restart()
            restarted = True
            continue
        if restarted and dest == victim:
            nodes[victim][1].alive.add(msg.sender)  # what the node loop does first
            if msg.kind == Kind.DTOEE_REQUEST:
                asked[msg.sender, msg.round] = msg.fields["payload"]["flops_s"]
        pol, view = nodes[dest]
        out = pol.on_control(msg, view, now)
        if restarted and dest == victim:
            answered += [(o.round, o.fields["payload"]["load_flops_s"]) for o in out
                         if o.kind == Kind.DTOEE_STATUS]
        _deliver(nodes, dest, out, queue)
    assert restarted
    return stalls, nodes, answered, asked


@pytest.mark.parametrize("at_round", [20, 50, 150])
def test_a_restarted_final_stage_worker_joins_the_current_round_without_a_stall(at_round):
    """Rule: a final-stage worker restarted mid-phase answers the round its predecessors are
    in as soon as all their requests for it are in, not the rounds it missed one request at a
    time: its predecessors never wait out round_interval_s for it, and every node still runs
    all the phase's rounds (before: 7, 17 and 49 stalls for restarts at rounds 20, 50 and 150
    of 200, the last never catching up)."""
    stalls, nodes, answered, asked = _phase_with_restart("c0", at_round)
    assert stalls == 0
    assert all(p.round == ROUNDS for p, _ in nodes.values() if p.offloader)
    assert nodes["c0"][0].round == ROUNDS
    # its first answer after the restart is already for its predecessors' round, and sums
    # every predecessor's request of that round (not only the first one heard)
    first, load = answered[0]
    assert first >= at_round
    preds = nodes["c0"][1].predecessors
    assert len(preds) > 1 and load == pytest.approx(sum(asked[p, first] for p in preds))
    # then one round after the other, to the phase's end
    got = [r for r, _ in answered]
    assert got == sorted(got) and set(got) == set(range(first, ROUNDS))


def test_a_worker_restarted_inside_a_round_costs_its_predecessors_one_stall():
    """Rule: a final-stage worker that restarts after some of a round's requests reached it
    (they are lost with it) cannot answer that round until it stalls; it then answers the
    latest round any predecessor asked for, from the requests it has, and is in step again
    with the next round: one stall in all (before: 17)."""
    stalls, nodes, answered, _ = _phase_with_restart("c0", 50, lose_first_request=True)
    assert stalls == 1
    assert all(p.round == ROUNDS for p, _ in nodes.values() if p.offloader)
    assert answered[0][0] >= 50
    for row in (p.work for p, _ in nodes.values() if p.offloader):
        assert abs(sum(row.values()) - 1.0) < 1e-9
