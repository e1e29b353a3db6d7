"""agent.node.timerq: deadlines come back in the order one heap would give; in-order kinds of
deadline, interleaved, stay off the heap."""

from __future__ import annotations

import heapq
import random

from agent.node.timerq import TimerQueue


def _drain(q: TimerQueue, now: float) -> list:
    out = []
    while True:
        entry = q.pop_due(now)
        if entry is None:
            return out
        out.append(entry)


def test_order_is_that_of_one_heap_for_any_mix_of_in_order_and_early_deadlines():
    """Random pushes (mostly increasing, some earlier, some equal) interleaved with pops come
    back exactly as a single heap of (due, push number) returns them, ties in push order."""
    rng = random.Random(7)
    for _ in range(50):
        q, ref, seq, now, got, want = TimerQueue(), [], 0, 0.0, [], []
        for step in range(400):
            now += rng.choice((0.0, 0.001, 0.01))
            r = rng.random()
            due = now + (1.0 if r < 0.5 else 30.0 if r < 0.7 else rng.uniform(0, 2) if r < 0.9
                         else 0.5)
            seq += 1
            q.push(due, "k%d" % seq, step % 3 == 0)
            heapq.heappush(ref, (due, seq, "k%d" % seq, step % 3 == 0))
            if rng.random() < 0.3:
                got += _drain(q, now + 1.0)
                while ref and ref[0][0] <= now + 1.0:
                    want.append(heapq.heappop(ref))
            assert len(q) == len(ref)
            assert q.next_due() == (ref[0][0] if ref else None)
        got += _drain(q, float("inf"))
        want += [heapq.heappop(ref) for _ in range(len(ref))]
        assert [(e[0], e[2], e[3]) for e in got] == [(e[0], e[2], e[3]) for e in want]


def test_nothing_comes_back_before_it_is_due():
    """pop_due returns None while the earliest deadline is later than now, and leaves it."""
    q = TimerQueue()
    assert q.next_due() is None and q.pop_due(1e9) is None
    q.push(5.0, "a", False)
    q.push(3.0, "b", True)  # earlier than the last in-order one: the heap side
    assert q.next_due() == 3.0
    assert q.pop_due(2.9) is None and len(q) == 2
    assert q.pop_due(3.0)[2:] == ("b", True)
    assert q.pop_due(4.0) is None
    assert q.pop_due(5.0)[2:] == ("a", False)
    assert len(q) == 0


def test_equal_deadlines_come_back_in_push_order_across_both_sides():
    """Ties between the in-order side and the heap side go by push order."""
    q = TimerQueue()
    q.push(2.0, "first", False)   # in order
    q.push(1.0, "early", False)   # heap
    q.push(2.0, "second", False)  # in order (equal to the last)
    q.push(1.5, "mid", False)     # heap
    assert [e[2] for e in _drain(q, 2.0)] == ["early", "mid", "first", "second"]


def test_interleaved_kinds_of_in_order_deadlines_never_reach_the_heap():
    """A source's pattern: per task an ACK deadline (now + 1 s, a little later when its link is
    busy) and a result deadline (now + 30 s), interleaved, plus a hold now and then: each kind
    is in order on its own, so every entry sits on a lane (O(1)) and none on the heap."""
    q, now = TimerQueue(), 0.0
    for i in range(3000):
        now += 0.0005
        q.push(now + 30.0, "r%d" % i, True)
        q.push(now + 1.0 + (0.002 if i % 3 == 0 else 0.0), "a%d" % i, False)
        if i % 100 == 0:
            q.push(now + 0.05, "", False)
        while q.pop_due(now) is not None:
            pass
    assert q._heap == []  # the point of the lanes: no per-task heap work
    assert len(q) > 0 and q.next_due() > now
