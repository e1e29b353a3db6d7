"""Which reason a source gives a new task when no stage-1 successor takes work now: ``overload``
only when one of them is full; when each is stopping (it refused with ``shutdown`` while it
drains) or has no route on, ``no_route``, with a ``retry_s`` of at least a heartbeat interval
and until the first hold ends. The source's real parts (``tests.unit.source_parts``: real
outbox, real ZeroMQ sockets); the successors' refusals come through ``Outbox.on_ack`` as an
ACK's ``refused`` list does."""

from __future__ import annotations

import time

import pytest

from agent.policies.api import AgentPolicy
from tests.unit.source_parts import source_parts

HOLD_S = 30.0  # how long a refusing successor is left alone here: no step outlasts it


@pytest.fixture
def parts(tmp_path):
    p = source_parts(tmp_path, AgentPolicy({}, {}))
    p.view.successors = tuple(p.view.successors) + ("w1b",)  # a second stage-1 worker
    p.view.peer_stages["w1b"] = (1, 1)
    p.view.alive.update(("w1", "w1b"))
    assert sorted(p.view.alive_successors(1)) == ["w1", "w1b"]
    yield p
    p.close()


def _refuse(p, peer, reason, now=None):
    """``peer`` refuses a task in its ACK for ``reason`` at monotonic ``now``; it is then left
    alone HOLD_S (longer than an ACK may ask, so that no slow step sees the hold end)."""
    now = time.monotonic() if now is None else now
    p.out.on_ack(peer, [], now, refused=["t#0"], retry_s=HOLD_S, reason=reason)
    p.view.unavailable[peer] = now + HOLD_S


def test_every_stage_1_worker_stopping_is_no_route_with_a_wait_until_the_first_hold_ends(parts):
    """Rule: when every stage-1 successor refused with shutdown (each is draining after
    SIGTERM), a new task is rejected no_route, not overload, and the advised retry_s is at
    least the heartbeat interval and covers the hold (an input sent before it ends is
    rejected again)."""
    p = parts
    now = time.monotonic()
    _refuse(p, "w1", "shutdown", now)
    _refuse(p, "w1b", "shutdown", now + 1.0)
    assert p.side.refusal() == "no_route"
    assert p.side.retry_s("no_route", now) == HOLD_S  # the first hold's end
    assert p.side.retry_s("no_route", now + HOLD_S) == p.cfg.heartbeat_interval_s


def test_a_stopping_worker_beside_a_full_one_is_overload(parts):
    """Rule: one stage-1 successor stopping (shutdown) and the other full (overload): the fleet
    that is left is overloaded, so a new task is rejected overload."""
    p = parts
    _refuse(p, "w1", "shutdown")
    _refuse(p, "w1b", "overload")
    assert p.side.refusal() == "overload"


def test_stopping_beside_no_route_is_no_route(parts):
    """Rule: one stage-1 successor stopping (shutdown), the other refusing no_route, or only
    reporting no route on in its heartbeat: nothing takes tasks and none is full, no_route."""
    p = parts
    _refuse(p, "w1", "shutdown")
    _refuse(p, "w1b", "no_route")
    assert p.side.refusal() == "no_route"
    del p.view.unavailable["w1b"]
    p.view.peer_state["w1b"] = {"no_route": 3}
    assert p.side.refusal() == "no_route"


def test_a_full_link_to_every_stage_1_worker_is_still_overload(parts):
    """Rule: stage-1 successors held off for a full link (link_full) or a full queue
    (overload) are an overload, as before."""
    p = parts
    _refuse(p, "w1", "overload")
    _refuse(p, "w1b", "link_full")
    assert p.side.refusal() == "overload"
    assert p.side.retry_s("overload", time.monotonic()) <= HOLD_S  # the first hold's end


def test_a_worker_back_from_its_stop_takes_tasks_again(parts):
    """Rule: once a stopping successor's hold has ended (a restarted worker), it takes tasks:
    nothing is refused, whatever its last refusal was."""
    p = parts
    _refuse(p, "w1", "shutdown")
    _refuse(p, "w1b", "shutdown")
    p.view.unavailable["w1"] = time.monotonic() - 1.0  # its hold has ended
    assert p.side.refusal() == ""
