"""A node's deadlines in time order: a few FIFO lanes for those that come in order, a heap for
the rest.

Nearly every deadline a node sets is "now + a fixed timeout": the ACK deadline of each message
it sends, a source's result deadline of each task it issues (a longer timeout). Each kind on
its own arrives in time order, so it can sit on a deque, where a push and a pop are O(1). With
every deadline on one heap, a busy worker popped one entry per task from a heap of about a
second's tasks (thousands of tuples), which cost it more CPU per task than decoding the TASK,
and a source's heap held every task of the last ``result_timeout_s``.

A deadline goes on the lane whose last one is the latest not after it (so the lanes stay in
order), on a new lane while there are fewer than ``LANES``, else on a small heap; ``pop_due``
takes from whichever head is earliest (ties: push order), so the order is exactly that of one
heap.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any, Deque, List, Optional, Tuple

Entry = Tuple[float, int, Any, Any]  # (due, push number, key, flag)
LANES = 4  # kinds of in-order deadlines a node has (ACKs, results, holds) and a spare


class TimerQueue:
    """(due, key, flag) entries, taken back earliest first once due (``pop_due``)."""

    __slots__ = ("_lanes", "_heap", "_seq", "_top")

    def __init__(self) -> None:
        self._lanes: List[Deque[Entry]] = []  # each: due times non-decreasing, head to tail
        self._heap: List[Entry] = []
        self._seq = 0
        # the first lane of the latest tail (None, or empty: not known): a deadline not before
        # that tail fits there tightest, where the scan of every lane in ``push`` would put it.
        # A worker pushes one deadline per result, nearly always the latest: no scan for those.
        # Tails change only by a push (to this lane: it stays the latest; elsewhere: before
        # its tail) or a lane emptying (this one: the next push scans and finds it again).
        self._top: Optional[Deque[Entry]] = None

    def __len__(self) -> int:
        return sum(map(len, self._lanes)) + len(self._heap)

    def push(self, due: float, key: Any, flag: Any) -> None:
        """Add ``key`` (with ``flag``) due at ``due`` (monotonic seconds)."""
        self._seq += 1
        entry = (due, self._seq, key, flag)
        top = self._top
        if top and top[-1][0] <= due:  # not before the latest tail: the tightest fit
            top.append(entry)
            return
        best, best_tail, empty = None, 0.0, None
        for lane in self._lanes:  # the latest tail not after ``due``: the tightest fit
            if not lane:
                empty = lane if empty is None else empty
            elif lane[-1][0] <= due and (best is None or lane[-1][0] > best_tail):
                best, best_tail = lane, lane[-1][0]
        if best is None:
            best = empty
        if best is None and len(self._lanes) < LANES:
            best = deque()
            self._lanes.append(best)
        if best is None:
            heapq.heappush(self._heap, entry)
        else:
            best.append(entry)
        if top:  # ``due`` went before its tail: it stays the latest (the first of equals)
            return
        for lane in self._lanes:  # the first lane of the latest tail, as the scan above picks
            if lane and (not top or lane[-1][0] > top[-1][0]):
                top = lane
        self._top = top

    def _first(self) -> Any:
        """The lane (or the heap) whose head is earliest, or None when all are empty (push
        numbers are unique, so comparing entries never reaches their keys)."""
        first = None
        for lane in self._lanes:
            if lane and (first is None or lane[0] < first[0]):
                first = lane
        heap = self._heap
        return heap if heap and (first is None or heap[0] < first[0]) else first

    def next_due(self) -> Optional[float]:
        """The earliest due time held (None: empty)."""
        first = self._first()
        return None if first is None else first[0][0]

    def pop_due(self, now: float) -> Optional[Entry]:
        """The earliest entry if it is due at ``now`` (removed), else None."""
        # ``_first`` inlined: one call fewer per result a worker sends (each sets a deadline)
        first = None
        for lane in self._lanes:
            if lane and (first is None or lane[0] < first[0]):
                first = lane
        heap = self._heap
        if heap and (first is None or heap[0] < first[0]):
            return heapq.heappop(heap) if heap[0][0] <= now else None
        if first is None or first[0][0] > now:
            return None
        return first.popleft()
