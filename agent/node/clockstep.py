"""A node noticing that its wall clock stepped, whatever its policy.

A Jetson without an RTC battery boots with a stale wall clock (the last saved time, 1970 or
2018) that NTP steps later, by days or years, while the agent may already serve; an operator
may ``date -s``. Delays, deadlines and timers use the monotonic clock and do not move, but the
wall times in records (``created_wall``, ``finished_wall``), ``stats.json`` and the log's own
stamps jump: a task in flight across the step has ``finished_wall - created_wall`` off its
``delay_s`` by the step. The node checks at each status line whether wall minus monotonic
time changed (``agent.policies.wallstep``, the one measure of a step; a stalled loop moves both
clocks alike and is no step) and says so in one WARNING per step, so a reader of the records
or the log knows where their wall times jump. DTO-EE's own line on its slots
(``agent.policies.dtoee.slotclock``) comes from its tick, at most a second after the step.
"""

from __future__ import annotations

import logging

from agent.policies.wallstep import STEP_MIN_S, WallOffset

log = logging.getLogger("agent.node.loop")  # a step is seen by the loop's status pass


class ClockStepWatch:
    """Logs one WARNING per wall-clock step seen between two ``check`` calls."""

    def __init__(self, min_step_s: float = STEP_MIN_S) -> None:
        self.min_step_s = min_step_s
        self._offset = WallOffset()  # wall minus monotonic time at the last check
        self.steps = 0  # steps seen since the start

    def check(self, mono_s: float, wall_s: float) -> float:
        """Compare ``wall_s`` and the monotonic ``mono_s`` (both read now) with the last call:
        the step in seconds (< 0: back; 0 when under ``min_step_s`` or at the first call),
        logged at WARNING when there is one."""
        step = self._offset.step_s(mono_s, wall_s)
        if abs(step) < self.min_step_s:
            return 0.0
        self.steps += 1
        log.warning("the wall clock stepped %s about %.0f s (NTP, date -s, a stale clock at "
                    "boot): delays, deadlines and timers use the monotonic clock and are "
                    "unaffected; wall times in records, stats.json and the log jump by it "
                    "(tasks in flight now: finished_wall - created_wall is off their delay_s)",
                    "forward" if step > 0 else "back", abs(step))
        return step
