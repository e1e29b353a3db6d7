"""A no_route hold about a source gone here grows while it stays gone and ends as soon as the
source is back (agent.node.refusal_scope.SourceHolds)."""

from __future__ import annotations

import pytest

from agent.node.refusal_scope import NO_ROUTE_HOLD_MAX_S, SourceHolds
from agent.policies.api import NodeView

ASKED_S = 0.2  # a worker's retry_s for no_route: its heartbeat interval


def _view() -> NodeView:
    """Stage-1 worker w1's view: successor w2, sources s1 and s2, all heard and alive."""
    v = NodeView(node_id="w1", role="worker", stage=1, num_stages=2, stage_flops=(1.0, 1.0),
                 stage_input_bytes=(8.0, 8.0), exit_stages=(1,), successors=("w2",),
                 predecessors=("s1", "s2"), link_rate_bytes_s={})
    v.alive.update({"w2", "s1", "s2"})
    v.peer_state.update({"s1": {}, "s2": {}, "w2": {}})
    return v


def _refused(holds: SourceHolds, now: float, source: str = "s1") -> float:
    """w2 refuses ``source``'s task no_route at ``now``: how long it is held off for them."""
    holds.hold("w2", source, now + ASKED_S, "no_route", now)
    return holds.held_for(source, now)["w2"] - now


def test_a_no_route_hold_about_a_source_gone_here_doubles_with_each_offer_up_to_the_cap():
    """Rule: while s1 stays gone here, each refusal of a task offered after the last hold
    ended holds w2 off for s1's tasks twice as long, from the retry_s asked up to
    NO_ROUTE_HOLD_MAX_S; s2's tasks are not held off."""
    view = _view()
    holds = SourceHolds(view)
    view.alive.discard("s1")
    now, lengths = 0.0, []
    for _ in range(8):
        lengths.append(_refused(holds, now))
        assert holds.held_for("s2", now) == {}
        now += lengths[-1]  # offered again when the hold ends, refused again
    assert lengths[:5] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2])
    assert lengths[5:] == pytest.approx([NO_ROUTE_HOLD_MAX_S] * 3)


def test_refusals_of_tasks_sent_before_the_hold_began_are_one_step():
    """Rule: one offer refused in several ACKs (tasks sent before the first refusal came)
    grows the hold once, not once per ACK."""
    view = _view()
    holds = SourceHolds(view)
    view.alive.discard("s1")
    assert _refused(holds, 0.0) == pytest.approx(0.2)
    assert _refused(holds, 0.3) == pytest.approx(0.4)
    for now in (0.31, 0.32, 0.35):  # the rest of that offer's refusals
        holds.hold("w2", "s1", now + ASKED_S, "no_route", now)
        assert holds.held_for("s1", now)["w2"] == pytest.approx(now + 0.4)
    assert _refused(holds, 0.8) == pytest.approx(0.8)


def test_a_no_route_hold_ends_as_soon_as_its_source_is_heard_again_and_starts_over():
    """Rule: a grown hold about s1 ends the moment s1 is alive here again (its heartbeat: the
    route is back), however long it had left; refused again later, the hold is the one asked."""
    view = _view()
    holds = SourceHolds(view)
    view.alive.discard("s1")
    now = 0.0
    for _ in range(6):
        now += _refused(holds, now)
    assert holds.held_for("s1", now - 0.01) == {"w2": pytest.approx(now)}
    view.alive.add("s1")  # heard again
    assert holds.held_for("s1", now - 0.01) == {} and not holds
    view.alive.discard("s1")  # gone once more
    assert _refused(holds, now) == pytest.approx(ASKED_S)


def test_a_task_sent_by_the_source_itself_ends_the_holds_made_while_it_was_gone():
    """Rule: a task straight from s1 proves it is back before its heartbeat is heard: the
    holds about s1 made while it was gone end, and the next one starts from the retry_s
    asked."""
    view = _view()
    holds = SourceHolds(view)
    view.alive.discard("s1")
    for now in (0.0, 0.2, 0.6, 1.4):
        _refused(holds, now)
    holds.hold("w2", "s2", 10.0, "overload", 1.4)  # another source's: stays
    holds.back("s1")
    assert holds.held_for("s1", 1.5) == {} and holds.held_for("s2", 1.5) == {"w2": 10.0}
    assert _refused(holds, 1.5) == pytest.approx(ASKED_S)


def test_a_no_route_hold_about_a_source_alive_here_is_the_one_asked():
    """Rule: s1 alive here (cut off at w2 alone: nothing here would see its route come back)
    is held off for as long as w2 asks, every time; so is a hold made without a view or
    without the time, and one for another reason."""
    view = _view()
    holds = SourceHolds(view)
    assert [_refused(holds, now) for now in (0.0, 0.2, 0.4, 0.6)] == pytest.approx([0.2] * 4)
    view.alive.discard("s1")
    holds.hold("w2", "s1", 1.0 + ASKED_S, "overload", 1.0)
    assert holds.held_for("s1", 1.0) == {"w2": pytest.approx(1.2)}
    plain = SourceHolds()
    plain.hold("w2", "s1", 0.2, "no_route", 0.0)
    plain.hold("w2", "s1", 0.5, "no_route", 0.3)
    assert plain.held_for("s1", 0.3) == {"w2": 0.5} and plain.why("w2", "s1") == "no_route"


def test_a_source_never_heard_here_is_not_gone():
    """Rule: only a source heard here and now silent is gone: one this node never heard (not
    its neighbour) has nothing here to tell its return by, so its hold does not grow."""
    view = _view()
    holds = SourceHolds(view)
    assert not holds.gone("s9")
    assert [_refused(holds, now, "s9") for now in (0.0, 0.2, 0.4)] == pytest.approx([0.2] * 3)
