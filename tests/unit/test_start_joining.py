"""A node's first moments: a successor not heard from yet keeps its routing share.

``NodeView.joining`` holds the successors not heard from since the node started, for their
silence limit from the start (``NeighbourSilence.joining``: the silence after which a heard
neighbour is gone). ``AgentPolicy.choose_successor`` lets a task drawn for one of them wait
(None) instead of sending it to an alive successor its routing avoids; the draw is the task's
own, so offering it again gives the same answer.
"""

from __future__ import annotations

from types import SimpleNamespace

from agent.config.peer import Peer
from agent.net.liveness import StageSizes
from agent.node.neighbourtime import NeighbourSilence
from agent.policies.api import NodeView, TaskInfo, TieredPolicy
from agent.policies.fixed_agent import FixedWeightsPolicy


def _view(alive, joining, successors=("w1a", "w1b"), peer_stages=None):
    return NodeView("s1", "source", 0, 2, (1e6, 1e6), (3136.0, 100.0), (1,), tuple(successors),
                    (), {}, alive=set(alive), joining=set(joining),
                    peer_stages=dict(peer_stages or {}))


def _policy(routing):
    pol = FixedWeightsPolicy({}, {"routing": routing})
    pol.configure(None, _view(("w1a", "w1b"), ()))
    return pol


def _tasks(n):
    return [TaskInfo("s1-%016x" % (i * 2654435761), 1, 3136) for i in range(n)]


def test_a_task_drawn_for_a_joining_successor_waits_and_none_goes_where_the_routing_avoids():
    """Routing {w1a: 1, w1b: 0}, only w1b heard yet: every task waits (None) for w1a rather
    than crossing to w1b; once w1a is heard, every task goes to it."""
    pol = _policy({"w1a": 1.0, "w1b": 0.0})
    tasks = _tasks(200)
    assert {pol.choose_successor(t, _view({"w1b"}, {"w1a"})) for t in tasks} == {None}
    assert {pol.choose_successor(t, _view({"w1a", "w1b"}, ())) for t in tasks} == {"w1a"}


def test_the_waiting_share_is_the_joining_successors_share_and_the_same_at_every_offer():
    """Routing {w1a: 0.25, w1b: 0.75}, w1b joining: about three tasks in four wait, and a task
    offered again gets the same answer (the draw is its own, not the policy's generator)."""
    pol = _policy({"w1a": 0.25, "w1b": 0.75})
    view = _view({"w1a"}, {"w1b"})
    tasks = _tasks(4000)
    first = [pol.choose_successor(t, view) for t in tasks]
    assert set(first) == {None, "w1a"}
    assert 0.70 <= first.count(None) / len(first) <= 0.80
    assert [pol.choose_successor(t, view) for t in tasks] == first


def test_no_wait_for_a_joining_successor_without_routing_share_tried_or_of_another_stage():
    """A joining successor holds no task when its weight is 0, when the task was already
    tried there (``exclude``), or when it does not serve the task's stage; with nothing
    joining the rule is as before (the rest of the mass spread over the alive ones)."""
    tasks = _tasks(100)
    zero = _policy({"w1a": 1.0, "w1b": 0.0})
    assert {zero.choose_successor(t, _view({"w1a"}, {"w1b"})) for t in tasks} == {"w1a"}
    pol = _policy({"w1a": 0.0, "w1b": 1.0})
    assert {pol.choose_successor(t, _view({"w1a"}, {"w1b"}), exclude=("w1b",))
            for t in tasks} == {"w1a"}
    other = _view({"w1a"}, {"w1b"}, peer_stages={"w1a": (1, 1), "w1b": (2, 2)})
    assert {pol.choose_successor(t, other) for t in tasks} == {"w1a"}
    assert {pol.choose_successor(t, _view({"w1a"}, ())) for t in tasks} == {"w1a"}


def test_a_successor_is_awaited_for_its_silence_limit_from_the_start_and_no_longer():
    """``NeighbourSilence``: at the start every successor is joining; one not heard within its
    silence limit of the start (a slow link's longer one included) is joining no more."""
    peers = [Peer(id=n, stage=1, control_address="tcp://127.0.0.1:1",
                  data_address="tcp://127.0.0.1:2", link_rate_bytes_s=r)
             for n, r in (("w1a", 1e7), ("slow", 2000.0))]
    silence = NeighbourSilence(SimpleNamespace(neighbour_silence_s=2.0), peers,
                               StageSizes((0, 0), (3136.0,)))
    slow_s = silence.limit_s("slow")
    fast_s = silence.limit_s("w1a")
    assert 2.0 <= fast_s < 2.1 and slow_s > 3.0  # the demo image takes 1.6 s on the slow one
    joining = silence.awaited(("w1a", "slow"), 100.0)
    assert joining == {"w1a", "slow"}
    assert silence.joining(joining, 100.0 + fast_s - 0.01) == {"w1a", "slow"}
    assert silence.joining(joining, 100.0 + fast_s + 0.01) == {"slow"}
    assert silence.joining(joining, 100.0 + slow_s + 0.1) == set()


def test_a_tiered_policy_waits_for_a_tier_not_heard_yet_and_falls_back_once_it_is_not():
    """``TieredPolicy.pick``: a task whose own group has a member still joining waits
    (-1, None) rather than going to the next group; with nothing joining it goes to the next
    group with an alive member."""
    pol = TieredPolicy({}, {})
    groups = [["w1a"], ["w1b"]]
    assert pol.pick(groups, _view({"w1b"}, {"w1a"}), 1) == (-1, None)
    assert pol.pick(groups, _view({"w1b"}, ()), 1) == (1, "w1b")
    assert pol.pick(groups, _view({"w1a", "w1b"}, ()), 1) == (0, "w1a")
