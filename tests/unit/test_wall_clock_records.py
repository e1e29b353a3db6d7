"""A source's records when the wall clock is stale or steps: a Jetson without an RTC battery
boots with the last shutdown's time (or 1970) and NTP steps it later, maybe while the agent
serves. Delays come from the monotonic clock, the wall clock is kept as a label only; a task
an earlier boot created (a power cut) gets no delay the wall clock cannot vouch for."""

from __future__ import annotations

import json

import numpy as np

from agent.node.book import SourceBook, wall_delay_s
from agent.node.records import RecordWriter

NOW_WALL_S = 1796526000.0  # a synced clock (December 2026)
X = np.zeros((1, 2), np.float32)


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _crash_then_boot(path, created_wall, created_mono, boot_wall, boot_mono, boot="bbbbbbbbbbbb"):
    """A task journalled in boot aaaa..., the process gone without a record line (power cut),
    then the next start in ``boot`` recovering it at ``boot_wall``/``boot_mono``."""
    book = SourceBook("s1", RecordWriter(path, boot="aaaaaaaaaaaa"))
    task = book.new(X, 1, created_wall, created_mono)
    del book  # no flush, no close
    again = SourceBook("s1", RecordWriter(path, boot=boot))
    assert again.recover(boot_wall, boot_mono) == 1
    again.records.close()
    (rec,) = [r for r in _lines(path) if r["id"] == task.id]
    assert rec["status"] == "lost" and rec["reason"] == "crash"
    return rec


def test_a_task_of_an_earlier_boot_recovered_at_a_1970_clock_has_no_made_up_delay(tmp_path):
    """Rule: a crash record of a task an earlier boot created, written while the clock still
    reads 1970 (no RTC battery, NTP not yet synced), has delay_s null, not minus 56 years;
    its wall times stay as labels."""
    rec = _crash_then_boot(str(tmp_path / "records.jsonl"), NOW_WALL_S, 3600.0, 40.0, 40.0)
    assert rec["delay_s"] is None
    assert rec["created_wall"] == NOW_WALL_S and rec["finished_wall"] == 40.0


def test_a_boot_clock_behind_the_crash_gives_no_negative_or_too_short_delay(tmp_path):
    """Rule: a clock restored at boot from a saved time older than the crash (timesyncd's clock
    file, 20 min stale) gives delay_s null: less than this boot's own uptime (monotonic time)
    cannot have passed since a task of an earlier boot was created."""
    stale = NOW_WALL_S - 1200.0 + 35.0
    rec = _crash_then_boot(str(tmp_path / "a.jsonl"), NOW_WALL_S, 3600.0, stale, 35.0)
    assert rec["delay_s"] is None
    # 10 s of wall time after a boot 35 s ago: the clock is off, the delay unknown
    rec = _crash_then_boot(str(tmp_path / "b.jsonl"), NOW_WALL_S, 3600.0, NOW_WALL_S + 10.0, 35.0)
    assert rec["delay_s"] is None


def test_a_synced_boot_clock_still_times_an_earlier_boots_task_on_the_wall_clock(tmp_path):
    """Rule: when the wall clock gives at least the boot's uptime, the crash record keeps the
    wall-clock delay (monotonic times of two boots do not compare)."""
    rec = _crash_then_boot(str(tmp_path / "records.jsonl"), NOW_WALL_S, 3600.0,
                           NOW_WALL_S + 300.0, 35.0)
    assert rec["delay_s"] == 300.0


def test_without_a_boot_id_only_a_negative_wall_delay_is_dropped(tmp_path):
    """Rule: without the kernel's boot id the earlier run may have been in this boot, so only
    a negative wall-clock delay is impossible (null); a short one stands."""
    path = str(tmp_path / "records.jsonl")
    rec = _crash_then_boot(path, NOW_WALL_S, 3600.0, NOW_WALL_S - 50.0, 35.0, boot="")
    assert rec["delay_s"] is None
    rec = _crash_then_boot(str(tmp_path / "b.jsonl"), NOW_WALL_S, 3600.0, NOW_WALL_S + 2.0,
                           35.0, boot="")
    assert rec["delay_s"] == 2.0
    assert wall_delay_s(10.0, 12.5, 0.0) == 2.5 and wall_delay_s(10.0, 12.5, 3.0) is None


def test_a_wall_clock_step_mid_task_leaves_the_delay_on_the_monotonic_clock(tmp_path):
    """Rule: a task in flight while NTP steps the wall clock by years (a 1970 start) is
    recorded with its monotonic delay; the stepped wall times are labels only."""
    path = str(tmp_path / "records.jsonl")
    book = SourceBook("s1", RecordWriter(path))
    task = book.new(X, 1, 40.0, 40.0)  # created at a 1970 clock
    book.complete({"id": task.id, "exit_stage": 1, "cls": 1, "confidence": 0.9, "hops": 1,
                   "resends": 0, "worker": "w1"}, NOW_WALL_S, 40.25)  # answered after the step
    lost = book.new(X, 1, NOW_WALL_S, 41.0)
    book.lose(lost.id, NOW_WALL_S - 3600.0, 43.0, "deadline")  # the clock stepped back 1 h
    book.records.close()
    done, gone = _lines(path)
    assert done["delay_s"] == 0.25 and done["finished_wall"] == NOW_WALL_S
    assert gone["delay_s"] == 2.0
