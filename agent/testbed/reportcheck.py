"""Which decoded records lines are task records the testbed's summaries can count.

``is_record`` is the one check ``agent.testbed.report.read_records`` applies to every line of a
source's ``records.jsonl``: a line it refuses is a damaged line (named in a warning, left out
of the summary), never a number that turns a mean delay negative or infinite, or a warm-up
window that starts at 10^300. ``STATUSES`` is the one list of a task's fates, and
``error_text`` what a summary shows of a task a source answered ``error``. Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

from agent.config.fields import is_finite
from agent.protocol.text import printable
from agent.protocol.wire import OUTCOMES
from agent.testbed.bounds import MAX_STAGES

# A task's fates in a records file, the one list of them: an agent source writes the first
# three (agent.node.book); "error" is an answer a source gave a client without making a task
# of it (an input it refused, reason bad_input), written only by the testbed's fleet mode,
# whose records hold the client's side of each task: the answers' outcomes.
STATUSES = OUTCOMES
# a record's times: each absent, null or a finite number (a NaN time is a damaged line)
TIME_KEYS = ("created_mono", "created_wall", "created", "finished_mono", "finished_wall",
             "finished", "delay_s")

# A completed task's delay in seconds is at most this: a testbed load lasts at most two days
# (warm-up and --duration each at most a day) and a source gives a task up within its result
# timeouts, so a longer delay (11.6 days) is a damaged time, not a slow task.
MAX_DELAY_S = 1e6

# Every time of a record, on either clock, is in [0, MAX_CLOCK_S] seconds: a monotonic clock
# counts from its boot and a wall clock from 1970, and 1e10 s is the year 2286, so a time
# outside (10^300, or below zero) is a damaged value, whatever the task's fate. delay_s, a
# difference, may be negative on a lost task of two boots, but no larger in size.
MAX_CLOCK_S = 1e10

# A lost task whose record was made at the next start after a crash: its monotonic times may
# come from two boots (node.book), so its finish may come before its creation on that clock.
CRASH_REASON = "crash"


# a number standing alone in a source's words (each input's own values: "input values in
# [250, 251]"), which would make every such input a kind of its own in a summary; digits in a
# word, a name or an address (float32, w12, jetson-01, 10.0.0.5) stay
_NUMBER = re.compile(r"(?<![\w.-])(?:[-+](?=\d))?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")


def error_text(rec: Mapping) -> str:
    """What the source said of an input it answered ``error``: "reason: detail"."""
    reason, detail = printable(rec.get("reason")), printable(rec.get("detail"))
    return ": ".join(t for t in (reason or "error", detail) if t)


def error_kind(text: str) -> str:
    """The kind of an ``error_text`` for a summary to count under: the text with each number
    as N, so inputs refused for one cause count together (the first one's words shown)."""
    return _NUMBER.sub("N", text)


# a task's (creation, finish) times, the clock first used that has both: the source's
# monotonic clock, then its wall clock, then an older record's unnamed one
DELAY_PAIRS = (("created_mono", "finished_mono"), ("created_wall", "finished_wall"),
               ("created", "finished"))
CREATED_KEYS = tuple(a for a, _b in DELAY_PAIRS)  # a task's creation time, first found


def _delay(rec: Mapping) -> Optional[float]:
    """Response time of one completed task, on the source's monotonic clock when present."""
    for ka, kb in DELAY_PAIRS:
        a, b = rec.get(ka), rec.get(kb)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return float(b) - float(a)
    return None


def _created(rec: Mapping) -> Optional[float]:
    for key in CREATED_KEYS:
        v = rec.get(key)
        if isinstance(v, (int, float)):
            return float(v)
    return None


def _finite(v) -> bool:
    """A number (no bool) whose float is finite (no NaN, no infinity, no 400-digit integer)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and is_finite(v)


def delay_ok(d: Optional[float]) -> bool:
    """None (no pair of times to take it from) or a delay in [0, MAX_DELAY_S] seconds: a task
    finished before it was created, or one whose times overflow, has damaged times."""
    return d is None or is_finite(d) and 0.0 <= d <= MAX_DELAY_S


def times_ok(rec: Mapping) -> bool:
    """Each of ``TIME_KEYS`` absent, null or finite; each absolute time in [0, MAX_CLOCK_S] and
    ``delay_s`` no larger in size; and the task's delay (finished minus created, ``_delay``)
    one ``delay_ok`` takes, whatever its fate, except a lost task recorded after a crash
    (``CRASH_REASON``: its two times may come from two boots)."""
    for k in TIME_KEYS:
        v = rec.get(k)
        if v is None:
            continue
        if not _finite(v) or not (-MAX_CLOCK_S if k == "delay_s" else 0.0) <= v <= MAX_CLOCK_S:
            return False
    if rec.get("status") == "lost" and rec.get("reason") == CRASH_REASON:
        return True
    return delay_ok(_delay(rec))


def exit_stage_ok(rec: Mapping) -> bool:
    """``exit_stage`` null, or a whole number (JSON true is no stage) of at most MAX_STAGES: at
    least 1 for a completed task (stages count from 1), 0 allowed for the others (the wire's
    "no stage" on an answer that is no result)."""
    v = rec.get("exit_stage")
    if v is None:
        return True
    least = 1 if rec.get("status") == "completed" else 0
    return isinstance(v, int) and not isinstance(v, bool) and least <= v <= MAX_STAGES


# each of TIME_KEYS with the least value it may take (see MAX_CLOCK_S)
_TIME_LEAST = tuple((k, -MAX_CLOCK_S if k == "delay_s" else 0.0) for k in TIME_KEYS)
_CREATED_1, _CREATED_2, _CREATED_3 = CREATED_KEYS
_SMALL_INT = 1 << 53  # a non-negative int below this is a finite float, no conversion needed


def is_record(obj) -> bool:
    """Whether a decoded line is a task record the summaries can count: an object with a
    string ``id``, a ``status`` of ``STATUSES``, a creation time (``created_mono``,
    ``created_wall`` or ``created``), times ``times_ok`` takes, a finite ``resends``, a
    ``correct`` of true, false or null and an ``exit_stage`` ``exit_stage_ok`` takes.

    Every line of a records file goes through it, so the checks of a line's own kinds of
    values (a JSON number is an ``int`` or a ``float``, no subclass) are written out here;
    any other value goes through ``times_ok`` and ``exit_stage_ok`` themselves."""
    if not isinstance(obj, dict):
        return False
    get = obj.get
    rid, status = get("id"), get("status")
    if not (isinstance(rid, str) and rid and status in STATUSES):
        return False
    for k, least in _TIME_LEAST:
        v = get(k)
        if v is None:
            continue
        t = type(v)
        if t is not float and t is not int:  # a bool, a string, a subclass: the full check
            if not times_ok(obj):
                return False
            break
        if not least <= v <= MAX_CLOCK_S:  # false for NaN, infinities and 400-digit ints
            return False
    else:  # every time null or a number in its range: the delay, as times_ok takes it
        if not (status == "lost" and get("reason") == CRASH_REASON):
            for ka, kb in DELAY_PAIRS:
                a, b = get(ka), get(kb)
                if a is not None and b is not None:
                    if not 0.0 <= float(b) - float(a) <= MAX_DELAY_S:
                        return False
                    break
    if get(_CREATED_1) is None and get(_CREATED_2) is None and get(_CREATED_3) is None:
        return False  # the times are checked: one that is there is a number
    r = get("resends")
    if r is not None and not (type(r) is int and 0 <= r < _SMALL_INT or _finite(r) and r >= 0):
        return False
    c = get("correct")
    if c is not None and c is not True and c is not False:
        return False
    st = get("exit_stage")
    if type(st) is int:
        return (1 if status == "completed" else 0) <= st <= MAX_STAGES
    return st is None or exit_stage_ok(obj)
