"""A node's deadlines in time order: a FIFO for those that come in order, a heap for the rest.

Nearly every deadline an outbox sets is "now + a fixed timeout" (the ACK deadline of each
message it sends), so they arrive in time order. Those go on a deque, where a push and a pop
are O(1). With every deadline on one heap, a busy worker popped one entry per task from a heap
of about a second's tasks (thousands of tuples), which cost it more CPU per task than
decoding the TASK. A deadline earlier than the deque's last goes on a small heap instead, and
``pop_due`` takes from whichever head is earlier (ties: push order), so the order is exactly
that of one heap.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any, Deque, List, Optional, Tuple

Entry = Tuple[float, int, Any, Any]  # (due, push number, key, flag)


class TimerQueue:
    """(due, key, flag) entries, taken back earliest first once due (``pop_due``)."""

    __slots__ = ("_fifo", "_heap", "_seq")

    def __init__(self) -> None:
        self._fifo: Deque[Entry] = deque()  # due times non-decreasing from head to tail
        self._heap: List[Entry] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._fifo) + len(self._heap)

    def push(self, due: float, key: Any, flag: Any) -> None:
        """Add ``key`` (with ``flag``) due at ``due`` (monotonic seconds)."""
        self._seq += 1
        entry = (due, self._seq, key, flag)
        fifo = self._fifo
        if not fifo or fifo[-1][0] <= due:
            fifo.append(entry)
        else:
            heapq.heappush(self._heap, entry)

    def next_due(self) -> Optional[float]:
        """The earliest due time held (None: empty)."""
        fifo, heap = self._fifo, self._heap
        if fifo and heap:
            return min(fifo[0][0], heap[0][0])
        return fifo[0][0] if fifo else heap[0][0] if heap else None

    def pop_due(self, now: float) -> Optional[Entry]:
        """The earliest entry if it is due at ``now`` (removed), else None."""
        fifo, heap = self._fifo, self._heap
        if heap and (not fifo or heap[0][:2] < fifo[0][:2]):
            return heapq.heappop(heap) if heap[0][0] <= now else None
        if fifo and fifo[0][0] <= now:
            return fifo.popleft()
        return None
