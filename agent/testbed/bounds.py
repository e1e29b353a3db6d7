"""Upper bounds on a testbed's numbers, so that a typo cannot start a run that never ends.

A topology's stage numbers bound the loops over its stages, its times (``warmup_s``,
``slot_s``) and the command's ``--duration`` bound how long one load runs, and its rates bound
how many tasks one load creates (``MAX_TASKS``, as for ``simulate``). Emulated capacities and
link rates are read by ``agent.scenario.format.rate_field``, in the range the agents' messages
carry (``agent.config.checks.RATE_RANGE``), as a scenario's are. Pure: no I/O.
"""

from __future__ import annotations

from typing import List, Tuple

from agent.commands.simulate import MAX_TASKS  # tasks one load may create, as in a simulation
from agent.config.checks import MAX_INTERVAL_S, MIN_INTERVAL_S
from agent.config.fields import Fields
from agent.errors import UsageError

MAX_STAGES = 1000  # stages a topology's workers may name (a bundle has a handful)
MAX_SECONDS = MAX_INTERVAL_S  # warmup_s, slot_s: at most a day, as every agent period
MIN_SLOT_S = MIN_INTERVAL_S  # slot_s: the agents' slot_length_s, at least 1 ms as every period
MAX_RATE = 1e6  # total tasks/s of one load (all sources together)
# the least total rate of a load, a run folder's or a submit's: --rates names rates to 0.01
# tasks/s and refuses one that rounds to 0 (the model has no per-source rate below it)
MIN_TASK_RATE_TASKS_S = 0.01
TASK_RATE_RANGE_TEXT = "in [%g, %g] tasks/s" % (MIN_TASK_RATE_TASKS_S, MAX_RATE)


def worker_stages(s: Fields) -> Tuple[int, int]:
    """A topology worker's ``stage`` and ``last_stage`` (0: just ``stage``), both at most
    MAX_STAGES."""
    st = s.int("stage", lo=1, hi=MAX_STAGES)
    last = s.value("last_stage", 0)
    if isinstance(last, bool) or not isinstance(last, int) or (
            last and not st <= last <= MAX_STAGES):
        raise s.fail("last_stage", "must be 0 (one stage) or an integer in [%d, %d]"
                     % (st, MAX_STAGES))
    return st, last


def seconds(item: Fields, key: str, default: float, lo: float = 0.0) -> float:
    """A time in seconds, at least ``lo`` and at most MAX_SECONDS."""
    return item.num(key, default, lo=lo, hi=MAX_SECONDS)


def check_load(rates: List[float], load_s: float, what: str = "--rates") -> None:
    """Each total rate at most MAX_RATE tasks/s and at most MAX_TASKS tasks over ``load_s``
    seconds (warm-up and measured time). Raises ``UsageError`` naming ``what``."""
    for r in rates:
        if r > MAX_RATE:
            raise UsageError("%s: %g tasks/s is over the limit of %g tasks/s"
                             % (what, r, MAX_RATE))
        if r * load_s > MAX_TASKS:
            raise UsageError("%s: %g tasks/s for %g s (warm-up and --duration) is %.3g tasks; "
                             "at most %d per run" % (what, r, load_s, r * load_s, MAX_TASKS))
