"""A source's arrival rate phi as DTO-EE plans with it: configured, or estimated from its slots.

Which sources are measured (``measures_arrivals``): a Poisson source (``arrival = "poisson"``)
creates its tasks at exactly its configured ``arrival_rate_tasks_s``, so counting them would
only add noise to the rate it plans with; a client source (``arrival = "client"``) is fed by
clients at a rate nothing in its config knows, so its rate is estimated from the new tasks it
takes in per slot (``ArrivalRate``), starting from the configured rate as the prior.

The estimate per slot of ``n`` new tasks over ``T`` seconds, with ``lambda`` the estimate so
far: a count further from the expected ``lambda * T`` than Poisson noise explains
(``NOISE_SIGMAS`` standard deviations, ``sqrt(max(lambda * T, MIN_VARIANCE_TASKS))``) is a
change of load, and the estimate jumps to ``n / T`` (a large load step is followed within one
slot); so it does when the last ``POOLED_SLOTS`` slots since the last jump, counted together,
are further from the estimate they started from than their noise (a moderate step, 13 to 20
tasks/s over 2 s slots, is within one slot's noise but seldom within three slots': in 200
seeded runs it came within 10% of the new rate after 4 slots at the median, 12 at the 90th
percentile, against 8 and 17 with the one-slot test alone; a steady 20 tasks/s then jumps about
5 times in 300 slots, the estimate's mean 20.05-20.17); otherwise the estimate moves
``SMOOTHING`` of the way towards ``n / T`` (a small steady error is corrected over a few dozen
slots without each slot's noise reaching the plan).
"""

from __future__ import annotations

import math
from collections import deque

# a slot's count further than this many Poisson standard deviations from the expected count is
# taken as a change of load: a steady Poisson stream crosses it in a few slots in a thousand
# (Poisson's tail is heavier at small counts); such a jump down is undone by the next slot, one
# up is worked off at SMOOTHING a slot (with 1 s slots at 20 tasks/s: about +1% on average;
# none with 5 s slots), the price of following a step up from a small count in one slot
NOISE_SIGMAS = 3.0
# the variance floor (tasks^2 per slot) of that test: at an expected count near 0 (an idle
# source, a tiny rate) a stray task or two is noise, not a step
MIN_VARIANCE_TASKS = 1.0
# fraction of the gap to a within-noise slot's rate the estimate moves per slot: small, so that
# the noise of one slot (sqrt(lambda * T) tasks) moves the planned rate by a tenth of it
SMOOTHING = 0.1
# slots counted together for the second test: enough that a step of half the load stands out,
# few enough that the jump lands on the new load, not on an average with the old
POOLED_SLOTS = 3


def measures_arrivals(arrival: str) -> bool:
    """True when a source with config ``arrival`` mode estimates its rate from its arrivals
    (``"client"``); a Poisson source keeps its configured rate (see the module docstring)."""
    return arrival == "client"


class ArrivalRate:
    """The estimated arrival rate (tasks/s) of one source, updated once per slot."""

    def __init__(self, prior_tasks_s: float):
        self.rate_tasks_s = max(0.0, float(prior_tasks_s))  # the config's rate until measured
        self.steps = 0  # slots whose count was a change of load (the estimate jumped)
        # (tasks, s, the estimate before it) of the last slots since a jump
        self._recent: deque = deque(maxlen=POOLED_SLOTS)

    def update(self, arrived_tasks: int, slot_s: float) -> float:
        """Take a slot of ``arrived_tasks`` new tasks over ``slot_s`` seconds; returns the new
        estimate (unchanged for a slot of no length)."""
        if not slot_s > 0:
            return self.rate_tasks_s
        self._recent.append((arrived_tasks, slot_s, self.rate_tasks_s))
        pooled_tasks = sum(n for n, _, _ in self._recent)
        pooled_s = sum(t for _, t, _ in self._recent)
        anchor = self._recent[0][2]  # the pooled slots against the estimate they started from:
        # the smoothing, moving towards a new load, would otherwise hide it from the test
        for n, t, rate in ((arrived_tasks, slot_s, self.rate_tasks_s),
                           (pooled_tasks, pooled_s, anchor)):
            if self._beyond_noise(n, t, rate):
                self.rate_tasks_s = n / t
                self.steps += 1
                self._recent.clear()
                return self.rate_tasks_s
        self.rate_tasks_s += SMOOTHING * (arrived_tasks / slot_s - self.rate_tasks_s)
        return self.rate_tasks_s

    @staticmethod
    def _beyond_noise(arrived_tasks: int, slot_s: float, rate_tasks_s: float) -> bool:
        expected_tasks = rate_tasks_s * slot_s
        noise_tasks = NOISE_SIGMAS * math.sqrt(max(expected_tasks, MIN_VARIANCE_TASKS))
        return abs(arrived_tasks - expected_tasks) > noise_tasks
