"""DTO-EE: a live successor that has sent no status yet keeps its share of the routing.

A source restarted mid-phase sends its round-0 requests only to the successors it already
knows alive; one that comes up a moment later has nothing to answer, so the round stalls with
a status from the others only. Counted as gone, that successor's share moved in one step to
the ones that had answered: in the testbed a restarted source whose nearest worker was not yet
seen sent all its tasks over a far, slow link to a worker that then stayed overloaded for the
whole run. Now the step moves only the share of the successors heard from, and the unheard one
gets a request with its share in the next round, so it answers and joins the phase.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from types import SimpleNamespace

import pytest

from agent.policies.dtoee import protocol as D
from agent.policies.dtoee.knobs import DtoeeParams
from agent.policies.dtoee.neighbours import Neighbours
from agent.protocol.wire import decode
from agent.scenario.format import parse_scenario
from tests.unit.test_dtoee_agent_rounds import _deliver, _fleet

FLOPS, BYTES = 1e6, 3136.0


def _status(sender, load, capacity=2e7, predecessors=1):
    return D.Status(sender, 3, load, capacity, 0.0, 0.0, predecessors, {}, 0)


def _step(routing, statuses, unheard=()):
    return D.offloader_step("s0", 3, routing, 20.0, 1.0, FLOPS, BYTES,
                            {s: 1.6e6 for s in routing}, statuses, DtoeeParams(), {}, 0,
                            unheard=unheard)


def test_an_unheard_successor_keeps_its_share_and_gets_a_request_with_it():
    """Only the heard successors' share moves; the unheard one's stays to the bit and its
    request carries that share of the node's flow."""
    routing = {"a": 0.5, "b": 0.3, "c": 0.2}
    res = _step(routing, {"a": _status("a", 1.8e7), "b": _status("b", 0.0)}, unheard=("c",))
    assert res.routing["c"] == 0.2
    assert res.routing["a"] + res.routing["b"] == pytest.approx(0.8, rel=1e-12)
    assert res.routing["b"] > 0.3  # the idle one gains, from a only
    assert set(res.requests) == {"a", "b", "c"}
    assert res.requests["c"].flops_s == pytest.approx(0.2 * 20.0 * FLOPS, rel=1e-12)
    assert res.change.get("c", 0.0) == 0.0  # no momentum carried for a held share


def test_all_mass_on_the_unheard_successor_moves_nothing():
    """The restarted source of the testbed: all its tasks go to the nearest worker, not heard
    yet; the far worker answered idle. Nothing moves towards the far one until the near one has
    answered (before: everything moved to the far one in this step)."""
    routing = {"near": 1.0, "far": 0.0}
    far_idle = {"far": _status("far", 0.0, predecessors=0)}
    held = _step(routing, far_idle, unheard=("near",))
    assert held.routing == {"near": 1.0, "far": 0.0}
    assert held.requests["near"].flops_s == pytest.approx(20.0 * FLOPS, rel=1e-12)
    gone = _step(routing, far_idle)  # near gone (no heartbeats): its share must go somewhere
    assert gone.routing == {"near": 0.0, "far": 1.0}
    # shares whose sum rounds above 1 leave nothing to move either, and nothing negative
    shares = (0.6734598871529389, 0.9190886196338225, 0.8268253295567211, 0.8855202667099468)
    held = ["n%d" % i for i in range(4)]
    split = _step(dict(zip(held, shares), far=0.0), far_idle, unheard=held)
    assert split.routing["far"] == 0.0 and min(split.routing.values()) >= 0.0


def test_a_successor_with_a_status_is_never_held():
    """Naming a successor that has a status in ``unheard`` changes nothing: it steps."""
    routing = {"a": 0.5, "b": 0.5}
    st = {"a": _status("a", 1e6), "b": _status("b", 1e6)}
    assert _step(routing, st, unheard=("b",)) == _step(routing, st)


def test_the_successors_held_are_the_live_and_the_joining_ones_without_a_status():
    """``Neighbours.unheard``: alive or still joining (not heard from since the node started,
    within their silence limit: the node loop's ``NodeView.joining``) and without a status; a
    successor neither alive nor joining is gone and not held."""
    view = SimpleNamespace(successors=("a", "b", "c", "d"), alive={"a", "b"}, joining={"c"})
    assert Neighbours().unheard(view, {"a": _status("a", 0.0)}) == ["b", "c"]


def _two_worker_scenario():
    """One source, two workers of the one stage: ``near`` behind a fast link, ``far`` behind
    a 40x slower one (the testbed's stage 1 as a source sees it)."""
    return parse_scenario({
        "stages": [{"flops": FLOPS, "input_bytes": BYTES, "exit": False}],
        "remaining": [1.0], "tradeoff": 0.5,
        "sources": [{"id": "s0", "rate": 20.0}],
        "workers": [{"id": "near", "stage": 1, "capacity": 3e7},
                    {"id": "far", "stage": 1, "capacity": 3e7}],
        "links": [{"from": "s0", "to": "near", "rate": 1.6e6},
                  {"from": "s0", "to": "far", "rate": 3.9e4}]})


@pytest.mark.parametrize("step", ["default", "joint"])
@pytest.mark.parametrize("near_up", ["before the far one answers", "after the first step"])
def test_a_restarted_source_keeps_its_routing_until_the_late_worker_answers(near_up, step):
    """The agent: a source restarts mid-phase with its saved routing (all to ``near``) and
    knows only ``far`` alive when its slot starts, so round 0 asks ``far`` alone. ``near``'s
    first heartbeat comes before ``far`` answers (the round stalls on ``near`` and the source
    steps with ``far``'s status only) or after the source's first step. Either way ``near``
    keeps its share through those steps, is asked in the next round, and the phase ends with
    most tasks still on it (before: all of them went to ``far`` at the first step). The same
    under ``step = "joint"`` (a stage of one offloader here)."""
    nodes = _fleet(_two_worker_scenario(), 20, knobs={"settle_rounds": 0, "step": step})
    queue = deque()
    for n in ("near", "far"):
        pol, view = nodes[n]
        _deliver(nodes, n, pol.on_tick(view, 0.0), queue)
    src, view = nodes["s0"]
    view = dataclasses.replace(view, alive={"far"}, joining={"near"})  # as the node loop starts
    nodes["s0"] = (src, view)
    src.restore({"routing": {"near": 1.0, "far": 0.0}})
    _deliver(nodes, "s0", src.on_tick(view, 0.0), queue)
    assert [d for d, _ in queue] == ["far"]  # round 0 asks the far worker only
    if near_up == "before the far one answers":
        view.alive.add("near")
        view.joining.discard("near")
    asked, now = [], 0.0
    while src.configuring and src.round < 20:
        if not queue:
            now += 2.0  # past round_interval_s: the round stalled
            for n, (pol, v) in nodes.items():
                _deliver(nodes, n, pol.on_tick(v, now), queue)
            continue
        dest, frames = queue.popleft()
        msg = decode(frames)
        if dest == "near":
            asked.append(msg.round)
        pol, v = nodes[dest]
        _deliver(nodes, dest, pol.on_control(msg, v, now), queue)
        if src.round == 1 and not asked:
            assert src.work == {"near": 1.0, "far": 0.0}  # the first step held near's share
            view.alive.add("near")
            view.joining.discard("near")
    assert src.round == 20
    assert asked and asked[0] <= 2  # asked from the round after the first step on
    assert src.work["near"] > 0.8  # the far, slow link carries a small share at most
