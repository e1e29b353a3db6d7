"""The parts a DTO-EE agent policy is built from, each on its own: ``Neighbours`` (what was
heard, by round), ``Settle`` (the early end) and ``ThresholdSync``'s saved state."""

from __future__ import annotations

from agent.policies.api import NodeView
from agent.policies.dtoee.agent import DtoeePolicy
from agent.policies.dtoee.neighbours import Neighbours, requests_out, status_out
from agent.policies.dtoee.protocol import Request, Status
from agent.policies.dtoee.settle import Settle
from agent.policies.dtoee.threshold_sync import ThresholdSync
from agent.protocol.wire import Kind


def _view(alive):
    return NodeView("b0", "worker", 1, 2, (1.0, 1.0), (8.0, 8.0), (1,), ("c0", "c1"),
                    ("a0", "a1"), {}, alive=set(alive))


def _req(sender, rnd, quiet=0):
    return Request(sender, rnd, 1.0, {1: 0.8}, 0, quiet)


def _status(sender, rnd, quiet=0):
    return Status(sender, rnd, 1.0, 2.0, 0.1, 0.0, 1, {1: 0.8}, 0, quiet=quiet)


def test_a_late_message_never_replaces_a_newer_round():
    """A request or status of an older round than the one kept is ignored; a newer replaces."""
    nb = Neighbours()
    nb.on_request("a0", _req("a0", 3))
    nb.on_request("a0", _req("a0", 2))
    nb.on_status("c0", _status("c0", 4))
    nb.on_status("c0", _status("c0", 1))
    assert nb.last_request["a0"].round == 3 and nb.last_status["c0"].round == 4
    nb.on_request("a0", _req("a0", 5))
    assert nb.last_request["a0"].round == 5 and nb.has_request("a0", 5)


def test_a_round_is_ready_with_every_live_neighbour_heard_and_a_gone_one_loses_its_share():
    """Round t is ready once every live predecessor's request and live successor's status of
    round t are in; an alive but late neighbour counts with its last message, a gone one (not
    alive, nothing this round) not at all; a new slot forgets the rounds, not the messages."""
    nb = Neighbours()
    view = _view({"a0", "a1", "c0", "c1"})
    for p in ("a0", "a1"):
        nb.on_request(p, _req(p, 0))
    nb.on_status("c0", _status("c0", 0))
    assert not nb.ready(view, 0, True, True)  # c1's status is missing
    nb.on_status("c1", _status("c1", 0))
    assert nb.ready(view, 0, True, True)
    assert not nb.ready(view, 1, True, True)
    view.alive.discard("a1")
    assert [r.sender for r in nb.requests(view, 1)] == ["a0"]  # a0 late: its last; a1 gone
    assert sorted(nb.statuses(view, 1)) == ["c0", "c1"]
    nb.start(20)
    assert not nb.has_request("a0", 0) and "a0" in nb.last_request


def test_the_streaks_heard_count_a_silent_live_neighbour_as_zero():
    """``heard`` gives each live neighbour's streak from this round's message, 0 without one."""
    nb = Neighbours()
    nb.on_request("a0", _req("a0", 2, quiet=4))
    nb.on_request("a1", _req("a1", 1, quiet=9))
    nb.on_status("c0", _status("c0", 2, quiet=6))
    assert nb.heard(_view({"a0", "a1", "c0", "c1"}), 2, True, True) == [4, 0, 6, 0]


def test_outgoing_requests_and_statuses_carry_the_streak_and_may_be_restamped():
    """Requests go to live successors only (and only to ``dests`` when given); both kinds carry
    the sender's quiet streak; ``round`` restamps the payload and the message."""
    pending = {"c0": _req("b0", 3), "c1": _req("b0", 3)}
    out = requests_out(pending, {"c0"}, 5, 7)
    assert [(o.kind, o.dest, o.round) for o in out] == [(Kind.DTOEE_REQUEST, "c0", 3)]
    assert out[0].fields["payload"]["quiet"] == 5 and out[0].slot == 7
    assert requests_out(pending, {"c0", "c1"}, 5, 7, dests=("c1",), round=6)[0].round == 6
    st = status_out(_status("b0", 2), 1, 7, ("a0", "a1"), round=4)
    assert [o.dest for o in st] == ["a0", "a1"] and st[0].fields["payload"]["round"] == 4
    assert status_out(None, 1, 7, ("a0",)) == []


def test_settle_ends_once_and_answers_only_neighbours_still_in_the_phase():
    """The phase ends the first time the streak reaches ``needed`` (raised to a threshold
    cycle); a settled node answers a shorter streak for a round the phase has, never another
    settled node; a threshold change breaks the streak; 0 turns the early end off."""
    s = Settle(tolerance=0.01)
    s.configure(settle_rounds=3, threshold_cycle=5)
    assert s.needed == 5
    s.start(thresholds_version=0)
    for _ in range(4):
        s.update(0.0, 0, [99])
        assert not s.ends_now()
    assert not s.answers(0, 1, 10)  # not settled yet
    s.update(0.0, 0, [99])
    assert s.ends_now() and s.settled and not s.ends_now()
    assert s.answers(2, 4, 10) and not s.answers(5, 4, 10) and not s.answers(2, 10, 10)
    s.update(0.0, 1, [99])
    assert s.quiet == 0
    off = Settle(0.01)
    off.configure(0, 5)
    off.start(0)
    for _ in range(20):
        off.update(0.0, 0, [99])
    assert not off.ends_now()


def test_saved_thresholds_come_back_only_when_they_fit_these_stages():
    """C and its version survive a restart through snapshot/restore; saved C for other stages,
    or a bad version (negative, or one no decision reaches, as an older agent could have taken
    from a peer), leaves the configured C."""
    ts = ThresholdSync({1: 0.8, 2: 0.7}, 0.05)
    ts.th, ts.version = {1: 0.6, 2: 0.75}, 3
    saved = ts.snapshot()
    back = ThresholdSync({1: 0.8, 2: 0.7}, 0.05)
    back.restore(saved)
    assert (back.th, back.version) == ({1: 0.6, 2: 0.75}, 3)
    other = ThresholdSync({1: 0.8}, 0.05)
    other.restore(saved)
    assert (other.th, other.version) == ({1: 0.8}, 0)
    for version in (-1, 2 ** 39, 2 ** 53 - 1):  # no decision reaches 2**39: never adopted
        bad = ThresholdSync({1: 0.8, 2: 0.7}, 0.05)
        bad.restore(dict(saved, thresholds_version=version))
        assert (bad.th, bad.version) == ({1: 0.8, 2: 0.7}, 0), version


def test_the_policy_holds_its_parts_and_no_part_shares_its_state():
    """Each part keeps its own state: the policy reaches it through the part, and two policies
    never share a part."""
    a, b = DtoeePolicy({1: 0.8}, {}), DtoeePolicy({1: 0.8}, {})
    for name in ("tsync", "settling", "joint", "neighbours"):
        assert getattr(a, name) is not getattr(b, name)
    assert not hasattr(a, "th") and not hasattr(a, "settled") and not hasattr(a, "last_request")


def test_a_request_or_status_for_a_round_past_the_phase_is_refused():
    """``checked`` parses a request or status and refuses one for a round at or past the
    phase's end: kept, it would count as its sender's message for every later round."""
    from agent.policies.dtoee.payload import to_payload
    import pytest

    nb = Neighbours()
    nb.start(20)
    assert nb.checked(Request, to_payload(_req("a0", 19))).round == 19
    assert nb.checked(Status, to_payload(_status("c0", 0))).sender == "c0"
    for msg, cls in ((_req("a0", 20), Request), (_status("c0", 10 ** 9), Status)):
        with pytest.raises(ValueError, match="round"):
            nb.checked(cls, to_payload(msg))
