"""A worker's record of the task issues it took, and the re-issues it holds back.

Each TASK a worker takes is remembered by task id and stage with its ``attempt`` and its
deadline here (``seen``): a copy of an attempt taken already (a re-send after a lost ACK) is a
duplicate and runs nothing. A source re-issues a task (a higher ``attempt``) exactly when its
own deadline for the earlier issue passes, but the worker counts that deadline from the moment
its loop read the earlier TASK, so here it ends later, by the time that TASK took from its
sender to this loop (on the links, in the sockets, behind a busy pass), summed over the hops it
took. A re-issue read within that margin is no replay: it is taken in and held (``Reissues``)
until the earlier issue's deadline here has passed, when that issue can no longer run here,
and then queued; dropped as a duplicate, it left the source without a result until the
re-issue's own deadline, while the earlier issue died at its deadline wherever it waited.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple


def forget_expired(seen: Dict[Tuple[str, int], Tuple[int, float]], keep_s: float,
                   now: float) -> None:
    """Drop the entries of ``seen`` (oldest first: (attempt, monotonic deadline) by task id and
    stage) whose deadline is more than ``keep_s`` before ``now``: no copy of such a task can
    still come (its senders drop it at its deadline), and a busy worker's table would otherwise
    grow to its bound (``worker.SEEN_KEYS`` entries, about 300 bytes each: 30 MB) over hours."""
    while seen and next(iter(seen.values()))[1] + keep_s < now:
        seen.popitem(last=False)  # type: ignore[call-arg]  # an OrderedDict


class Reissues:
    """Re-issued tasks taken in while the earlier issue's deadline here had not passed, each
    held until then (a side's timer on ``outbox``: ``Outbox.call_at``), by task key and stage:
    a worker serving several stages (``last_stage``) can hold one attempt for two stages at
    once (a copy run at the earlier stage elsewhere, after a re-send), each until its own
    earlier issue's deadline."""

    def __init__(self, outbox: Any) -> None:
        self.out = outbox
        self.jobs: Dict[str, Any] = {}  # held key (``held_key``) -> its Job
        self.nbytes = 0  # their input tensors' bytes (they count in the node's queue bounds)

    def __len__(self) -> int:
        return len(self.jobs)

    @staticmethod
    def held_key(key: str, stage: int) -> str:
        """The key a re-issue of task ``key`` (``wire.task_key``) for ``stage`` is held and
        timed under."""
        return "%s@%d" % (key, stage)

    def hold(self, key: str, job: Any, until: float) -> None:
        """Keep ``job`` (task ``key``, for ``job.stage``) until monotonic time ``until``;
        counted ``reissue_held``. The side's timer comes back with its ``held_key``."""
        held = self.held_key(key, job.stage)
        self.jobs[held] = job
        self.nbytes += job.x.nbytes
        self.out.count("reissue_held")
        self.out.call_at(until, held)

    def release(self, held: str) -> Optional[Any]:
        """The job held under ``held`` (a timer's key: ``held_key``), now due (None: no such
        job)."""
        job = self.jobs.pop(held, None)
        if job is not None:
            self.nbytes -= job.x.nbytes
        return job
