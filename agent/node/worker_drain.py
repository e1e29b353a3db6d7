"""A worker's stop (SIGTERM: ``systemctl stop`` or ``restart``, a rolling upgrade): it finishes
the work it has taken and takes no more.

From the stop on, a new TASK is refused at once in its ACK, reason ``shutdown``, with a
``retry_s`` of what is left of the drain (its sender holds it off for up to ``outbox.HOLD_MAX_S``
a time and routes the task to another successor, or holds it; once the worker has gone its data
connection drops and the sender counts it gone). A copy of a task already taken is still ACKed:
the worker holds it and finishes it. The input queue and the engine run on, and what they make
(results, next-stage tasks) is sent and kept until ACKed, for up to ``drain_timeout_s``, while
where it goes is alive (``loop_drain``). A queued task whose source is gone is dropped
(``drop_source_gone``) instead of run: that source has recorded it already. The stop then logs
one line with what the worker handed back, finished and abandoned (``WorkerDrain.line``).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from agent.node.loop_drain import custody_left, heard_and_gone

log = logging.getLogger("agent.node.loop")  # a step of the loop's stop: logged under its name

# the outbox counters a stop's line reports as changes since the stop
_COUNTED = ("refused_shutdown", "acked", "drop_source_gone", "drop_deadline", "duplicate_task")


class WorkerDrain:
    """A worker's stop: whether it has begun, what to ask of a refused sender, and the line.

    ``drain_timeout_s``: the bound of the stop; ``out``: the worker's ``outbox.Outbox``.
    ``ran`` counts the jobs the engine handed back (the worker adds one per job).
    """

    def __init__(self, drain_timeout_s: float, out: Any):
        self.drain_timeout_s = drain_timeout_s
        self.out = out
        self.stopping = False
        self.ran = 0
        self._began = 0.0  # monotonic time of the stop
        self._queued = 0  # tasks in the input queue and engine at the stop
        self._custody = 0  # items sent and not ACKed, or held, at the stop
        self._ran0 = 0
        self._counts0: Dict[str, int] = {}

    def begin(self, queued: int, now: float) -> None:
        """The worker is stopping at monotonic ``now`` with ``queued`` tasks taken in and not
        run yet."""
        self.stopping = True
        self._began = now
        self._queued = queued
        self._custody = len(self.out.items) + len(self.out.waiting)
        self._ran0 = self.ran
        self._counts0 = {k: self.out.counters[k] for k in _COUNTED}

    def retry_s(self, now: float) -> float:
        """How long a sender refused during the stop should leave this worker alone: what is
        left of the drain (the sender bounds it), at least a tenth of a second."""
        return max(self._began + self.drain_timeout_s - now, 0.1)

    def source_gone(self, source: Optional[str]) -> bool:
        """True when a queued task of ``source`` is not worth running: the worker is stopping
        and that source was heard and is gone (its result could not be delivered)."""
        return self.stopping and heard_and_gone(self.out.view, source)

    def line(self, queued_left: int, now: float) -> str:
        """What the stop did, for the log: handed back (refused), finished, abandoned."""
        d = {k: self.out.counters[k] - self._counts0.get(k, 0) for k in _COUNTED}
        live, gone = custody_left(self.out)
        return ("drained in %.2f s: handed back %d new task(s) (refused: shutdown); of %d "
                "queued and %d unACKed at the stop, ran %d job(s), %d ACKed, dropped %d "
                "(source gone %d, deadline %d); abandoned %d queued, %d unACKed (%d to gone "
                "nodes)" % (now - self._began, d["refused_shutdown"], self._queued,
                            self._custody, self.ran - self._ran0, d["acked"],
                            d["drop_source_gone"] + d["drop_deadline"], d["drop_source_gone"],
                            d["drop_deadline"], queued_left, live + gone, gone))

    def report(self, queued_left: int, now: float) -> None:
        """Log ``line`` once, at the end of a stop (nothing when the worker never stopped)."""
        if self.stopping:
            log.info("%s", self.line(queued_left, now))
