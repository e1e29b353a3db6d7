"""Records of a source: one final line per created task across crashes and full disks."""

from __future__ import annotations

import json
import os

import numpy as np

from agent.node.book import SourceBook
from agent.node.appendfile import cut_torn_tail
from agent.node.records import RecordWriter
from tests.integration.tmpfs import fill, tmpfs


def _lines(path):
    with open(path, "rb") as f:
        data = f.read()
    assert not data or data.endswith(b"\n"), "torn last line"
    return [json.loads(line) for line in data.splitlines()]


def _book(path):
    return SourceBook("s1", RecordWriter(path))


def test_tasks_created_before_a_crash_get_one_lost_crash_record_at_the_next_start(tmp_path):
    """Rule: a task journalled as created whose final line never reached records.jsonl (the
    process died: nothing closed, buffered lines gone) is recorded lost/crash at the next start,
    once; tasks already recorded are not recorded again."""
    path = str(tmp_path / "records.jsonl")
    book = _book(path)
    x = np.zeros((1, 2), np.float32)
    tasks = [book.new(x, 1, 100.0 + i, 10.0 + i) for i in range(5)]
    book.complete({"id": tasks[0].id, "exit_stage": 1, "cls": 1, "confidence": 0.9, "hops": 1,
                   "resends": 0, "worker": "w1"}, 200.0, 20.0)
    book.reject(101.0, 11.0)
    book.records.flush()  # completed[0] and the rejection are on disk
    book.complete({"id": tasks[1].id, "exit_stage": 1, "cls": 1, "confidence": 0.9, "hops": 1,
                   "resends": 0, "worker": "w1"}, 201.0, 21.0)  # buffered only: lost in the crash
    del book  # SIGKILL: no flush, no close

    again = _book(path)
    assert again.recover(300.0, 30.0) == 4
    assert again.recover(300.0, 30.0) == 0  # once
    again.records.close()
    recs = _lines(path)
    ids = [r["id"] for r in recs]
    assert sorted(ids) == sorted(set(ids)), "a task recorded twice"
    assert len(recs) == 6  # 5 created + 1 rejected, each exactly once
    crash = [r for r in recs if r.get("reason") == "crash"]
    assert {r["id"] for r in crash} == {t.id for t in tasks[1:]}
    assert all(r["status"] == "lost" and r["label"] == 1 for r in crash)
    third = _book(path)  # a clean close left nothing open
    assert third.recover(400.0, 40.0) == 0


def test_a_final_line_written_just_before_the_crash_is_not_recorded_twice(tmp_path):
    """Rule: a record on disk whose journal '-' line never made it is found in records.jsonl
    at start-up and not recorded again."""
    path = str(tmp_path / "records.jsonl")
    w = RecordWriter(path)
    w.opened("t1", 1.0, 1.0, 0)
    with open(path, "a") as f:  # the final line reached the file, the '-' did not
        f.write(json.dumps({"id": "t1", "status": "completed"}) + "\n")
    again = RecordWriter(path)
    assert again.recovered() == []


def test_a_torn_last_line_is_cut_and_its_task_recovered(tmp_path):
    """Rule: records.jsonl never keeps a torn line: a partial last line (a crash mid-write) is
    cut at start-up and the task it belonged to is recorded from the journal."""
    path = str(tmp_path / "records.jsonl")
    w = RecordWriter(path)
    w.opened("t1", 1.0, 1.0, 0)
    w.opened("t2", 1.0, 1.0, 0)
    w.write({"id": "t1", "status": "completed"})
    w.flush()
    with open(path, "a") as f:
        f.write('{"id": "t2", "stat')
    book = _book(path)
    assert [r["id"] for r in book.records.recovered()] == ["t2"]
    assert [r["id"] for r in _lines(path)] == ["t1"]
    assert cut_torn_tail(path) == 0


def test_disk_full_keeps_lines_in_memory_counts_and_never_raises():
    """Rule: a write that fails with ENOSPC (/dev/full) raises nothing, keeps the lines for the
    next flush and counts the failure; past the buffer bound the oldest lines are dropped and
    counted."""
    w = RecordWriter("/dev/full", journal=False, max_buffered=3)
    for i in range(2):
        w.write({"id": "t%d" % i})
    assert w.flush() is False
    assert w.buffered == 2 and w.faults.failures == 1 and w.dropped == 0
    for i in range(2, 5):
        w.write({"id": "t%d" % i})
    assert w.buffered == 3 and w.dropped == 2
    w.close()  # no exception either


def test_a_full_tmpfs_gets_no_torn_line_and_writing_resumes_when_space_returns(tmp_path,
                                                                             monkeypatch):
    """Rule: on a real full file system a record flush writes whole lines or nothing, in parts
    of at most FLUSH_CHUNK_BYTES: freed space smaller than the backlog takes the oldest lines
    that fit (the part that did not fit is cut back, nothing torn), and the rest follow once
    there is room (root: a 64 kB tmpfs; parts of two 3 kB lines here). All or nothing, a
    backlog larger than the freed space had kept every line out."""
    from agent.node import records as records_mod

    monkeypatch.setattr(records_mod, "FLUSH_CHUNK_BYTES", 6100)
    with tmpfs(str(tmp_path / "disk"), 64 * 1024) as disk:
        path = os.path.join(disk, "records.jsonl")
        w = RecordWriter(path)
        for i in range(20):
            w.opened("t%d" % i, 1.0, 1.0, 0)
        filler = fill(disk)
        big = "x" * 3000
        for i in range(20):
            w.write({"id": "t%d" % i, "pad": big})
        assert w.flush() is False and w.buffered == 20
        assert _lines(path) == []
        os.truncate(filler, os.path.getsize(filler) - 16 * 1024)  # room for part of the flush
        assert w.flush() is False
        part = [r["id"] for r in _lines(path)]  # whole lines only: _lines parses every one
        assert 0 < len(part) < 20 and part == ["t%d" % i for i in range(len(part))]
        assert len(part) % 2 == 0 and w.buffered == 20 - len(part)
        os.unlink(filler)
        assert w.flush() is True and w.buffered == 0
        assert [r["id"] for r in _lines(path)] == ["t%d" % i for i in range(20)]
        w.close()
        assert RecordWriter(path).recovered() == []  # each task's line is there, once


def test_a_torn_journal_line_is_cut_so_the_next_runs_tasks_stay_recoverable(tmp_path):
    """Rule: a journal ending in a torn line (a crash mid-write) is cut at start-up before the
    new run appends: a '+' line glued to the fragment would be unreadable, and that run's task
    would get no record after a second crash."""
    path = str(tmp_path / "records.jsonl")
    with open(path + ".journal", "w") as f:
        f.write('+{"id":"old","crea')
    book = _book(path)
    assert book.recover(100.0, 10.0) == 0  # the torn task was never handed out
    task = book.new(np.zeros((1, 2), np.float32), 3, 101.0, 11.0)
    del book  # a second crash
    again = _book(path)
    assert again.recover(200.0, 5.0) == 1
    again.records.close()
    (rec,) = _lines(path)
    assert rec["id"] == task.id and rec["reason"] == "crash" and rec["label"] == 3
    assert rec["delay_s"] == 200.0 - 101.0  # wall clock: another boot's monotonic time


def test_lines_given_up_on_a_full_disk_keep_nothing_in_memory_and_are_recorded_later(tmp_path):
    """Rule: a record line given up while the disk is full (the buffer bound) keeps nothing of
    its task in memory (a long outage must not grow the agent); once a write works again the
    task is read back from its journal line and recorded lost, reason ``unrecorded``: every
    task still ends with exactly one line. The records file's descriptor is pointed at
    /dev/full for the outage (the kernel's real ENOSPC); the journal stays writable."""
    from tests.unit.source_parts import source_parts
    from agent.policies.api import AgentPolicy

    parts = source_parts(tmp_path, AgentPolicy({}, {}))
    try:
        book = parts.side.book
        w = book.records
        w.max_buffered = 3
        tasks = [book.new(np.zeros((1, 2), np.float32), -1, 100.0 + i, 10.0 + i)
                 for i in range(10)]
        good_fd, w._fd = w._fd, os.open("/dev/full", os.O_WRONLY)
        w._follow_path = lambda: None  # the swap is on purpose: do not reopen records.jsonl
        for t in tasks:
            book.complete({"id": t.id, "exit_stage": 1, "cls": 1, "confidence": 0.9, "hops": 1,
                           "resends": 0, "worker": "w1"}, 200.0, 20.0)
        parts.side.flush()
        assert w.dropped == 7 and w.buffered == 3 and len(w.open_tasks) == 3
        os.close(w._fd)
        w._fd = good_fd
        parts.side.flush()  # the disk works again: 3 lines, then the 7 read back
        recs = _lines(parts.records)
        assert sorted(r["id"] for r in recs) == sorted(t.id for t in tasks)
        lost = [r for r in recs if r["status"] == "lost"]
        assert len(lost) == 7 and {r["reason"] for r in lost} == {"unrecorded"}
        assert all(r["label"] is None for r in recs) and not w.open_tasks
        w.close()
        assert RecordWriter(parts.records).recovered() == []
    finally:
        parts.close()


def test_a_crashed_runs_task_is_timed_on_the_monotonic_clock_when_the_boot_is_the_same(tmp_path):
    """Rule: a crash record's delay_s comes from the monotonic clock when the journal line was
    written in this boot (a wall clock stepped back between the runs gives no negative delay),
    and from the wall clock when the boot differs or is unknown."""
    path = str(tmp_path / "records.jsonl")
    x = np.zeros((1, 2), np.float32)
    book = SourceBook("s1", RecordWriter(path, boot="aaaaaaaaaaaa"))
    same = book.new(x, 1, 1000.0, 50.0)
    del book
    again = SourceBook("s1", RecordWriter(path, boot="aaaaaaaaaaaa"))
    assert again.recover(900.0, 52.5) == 1  # the wall clock went back 100 s meanwhile
    again.records.close()
    (rec,) = [r for r in _lines(path) if r["id"] == same.id]
    assert rec["reason"] == "crash" and rec["delay_s"] == 2.5

    other = SourceBook("s1", RecordWriter(path, boot="aaaaaaaaaaaa"))
    rebooted = other.new(x, 1, 1000.0, 50.0)
    del other
    after = SourceBook("s1", RecordWriter(path, boot="bbbbbbbbbbbb"))
    assert after.recover(1030.0, 5.0) == 1  # a new boot: its monotonic clock starts again
    after.records.close()
    (rec,) = [r for r in _lines(path) if r["id"] == rebooted.id]
    assert rec["delay_s"] == 30.0


def test_the_boot_tag_is_read_from_the_kernels_boot_id_and_empty_when_there_is_none(tmp_path):
    """Rule: read_boot_id gives a short hex tag of the kernel's boot id, and "" for a missing or
    malformed file (the wall clock is then used for crash records)."""
    from agent.ops.boot import BOOT_TAG_CHARS, read_boot_id
    f = tmp_path / "boot_id"
    f.write_text("58a6ebfe-693b-4f1e-9d6a-0123456789ab\n")
    assert read_boot_id(str(f)) == "58a6ebfe693b"[:BOOT_TAG_CHARS]
    f.write_text("not an id\n")
    assert read_boot_id(str(f)) == ""
    assert read_boot_id(str(tmp_path / "missing")) == ""
