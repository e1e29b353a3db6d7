"""Records and their journal across a power cut: the order of the writes and syncs (the group
commit), how often it syncs, and the recovery from what a power cut can leave on the disk.

A power cut cannot be pulled here: the writes and syncs of a real writer on real files are
traced (``os.write``, ``os.fdatasync``, ``os.fsync`` wrapped, each still done), and a power cut
at any point of that trace is modelled as each file keeping what it held at its last sync (the
worst case: the kernel wrote back nothing else) or all it was given (the journal written back,
the records not: the two files are written back independently)."""

from __future__ import annotations

import json
import os

import numpy as np

from agent.node.book import SourceBook
from agent.node.journal import COMMIT_GAP_S
from agent.node.records import RecordWriter

X = np.zeros((1, 2), np.float32)
RESULT = {"exit_stage": 1, "cls": 1, "confidence": 0.9, "hops": 1, "resends": 0, "worker": "w1"}


class Clock:
    """A monotonic clock the test moves (the commit schedule, not the test, depends on it)."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Trace:
    """Every write and sync of this process, with the file it went to, in order."""

    def __init__(self, monkeypatch):
        self.events = []  # (op, file name, bytes written or b"")
        real_write, real_fsync, real_fdatasync = os.write, os.fsync, os.fdatasync

        def name(fd):
            try:
                return os.path.basename(os.readlink("/proc/self/fd/%d" % fd))
            except OSError:
                return "?"

        def write(fd, data):
            n = real_write(fd, data)
            self.events.append(("write", name(fd), bytes(data[:n])))
            return n

        def fsync(fd):
            self.events.append(("sync", name(fd), b""))
            return real_fsync(fd)

        def fdatasync(fd):
            self.events.append(("sync", name(fd), b""))
            return real_fdatasync(fd)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fdatasync", fdatasync)

    def syncs(self, name):
        return sum(1 for op, f, _ in self.events if op == "sync" and f == name)

    def cuts(self):
        """At each point of the trace: (records.jsonl bytes synced, journal bytes written)."""
        given = {"records.jsonl": 0, "records.jsonl.journal": 0}
        synced = dict(given)
        for op, f, data in self.events:
            if f in given:
                if op == "write":
                    given[f] += len(data)
                else:
                    synced[f] = given[f]
            yield synced["records.jsonl"], given["records.jsonl.journal"]


def _run_source(path, clock, tasks=40):
    """A source's records path: tasks created, answered, flushed once a loop pass (as in
    client mode), the clock moving 50 ms a task: commits fall among them."""
    book = SourceBook("s1", RecordWriter(path, clock=clock))
    book.recover(1.0, 1.0)
    open_ = []
    for i in range(tasks):
        open_.append(book.new(X, 1, 1000.0 + i, 10.0 + i))
        if i % 3 == 2:
            book.reject(1000.0 + i, 10.0 + i)
        if i % 2:
            book.complete(dict(RESULT, id=open_.pop(0).id), 1000.5 + i, 10.5 + i)
        book.records.flush()
        clock.t += 0.05
    return book


def _final_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_a_minus_line_is_written_only_after_its_record_line_was_synced(tmp_path, monkeypatch):
    """Rule: a task's '-' journal line is never written (so never on the disk) before an
    fdatasync of records.jsonl that covers its record line: a power cut cannot keep the '-'
    line and lose the record."""
    path = str(tmp_path / "records.jsonl")
    trace = Trace(monkeypatch)
    _run_source(path, Clock())
    records, synced, minus = b"", b"", 0
    for op, f, data in trace.events:
        if f == "records.jsonl":
            records += data
            if op == "sync":
                synced = records
        elif op == "write" and f == "records.jsonl.journal" and data.startswith(b"-"):
            for line in data.splitlines():
                minus += 1
                assert b'{"id":"%s"' % line[1:] in synced, "a '-' line before its record's sync"
    assert minus > 10  # the run did write '-' lines (the rule was put to the test)


def test_every_power_cut_point_leaves_each_journalled_task_exactly_one_final_line(
        tmp_path, monkeypatch):
    """Rule: a power cut at any point (records.jsonl back to its last sync, the journal with
    all it was given) leaves files from which the next start gives every task whose '+' line
    survived exactly one final line: its record, or a lost/crash record, never none, never
    two."""
    path = str(tmp_path / "run" / "records.jsonl")
    trace = Trace(monkeypatch)
    _run_source(path, Clock()).records.close()
    monkeypatch.undo()
    with open(path, "rb") as f:
        records = f.read()
    with open(path + ".journal", "rb") as f:
        journal = f.read()
    cuts = sorted(set(trace.cuts()))
    assert len(cuts) > 20
    for n, (rec_bytes, jour_bytes) in enumerate(cuts):
        cut = str(tmp_path / ("cut%d" % n) / "records.jsonl")
        os.makedirs(os.path.dirname(cut))
        with open(cut, "wb") as f:
            f.write(records[:rec_bytes])
        with open(cut + ".journal", "wb") as f:
            f.write(journal[:jour_bytes])
        plus = {json.loads(line[1:])["id"] for line in journal[:jour_bytes].splitlines()
                if line.startswith(b"+")}
        book = SourceBook("s1", RecordWriter(cut))
        book.recover(2000.0, 20.0)
        book.records.close()
        ids = [r["id"] for r in _final_lines(cut)]
        assert len(ids) == len(set(ids)), "a task recorded twice (cut %d)" % n
        assert plus <= set(ids), "a journalled task with no final line (cut %d)" % n


def test_the_group_commit_syncs_at_most_once_per_gap_and_never_per_task(tmp_path, monkeypatch):
    """Rule: however many tasks and flushes, records.jsonl and its journal are each synced at
    most once per COMMIT_GAP_S (never per task), and a line written is synced by the first
    flush after the gap: a power cut takes about a second of lines, not half a minute."""
    path = str(tmp_path / "records.jsonl")
    clock = Clock()
    trace = Trace(monkeypatch)
    book = SourceBook("s1", RecordWriter(path, clock=clock))
    book.records.flush()  # the first commit (the files were just made)
    base = trace.syncs("records.jsonl.journal")
    for i in range(500):  # 500 tasks, a flush each, within one gap
        t = book.new(X, 1, 1000.0, 10.0)
        book.complete(dict(RESULT, id=t.id), 1000.1, 10.1)
        book.records.flush()
        clock.t += COMMIT_GAP_S / 1000.0
    assert trace.syncs("records.jsonl") <= 1 and trace.syncs("records.jsonl.journal") == base
    clock.t += COMMIT_GAP_S
    book.records.flush()  # the gap passed: one commit covers all 500
    assert trace.syncs("records.jsonl") <= 2
    assert trace.syncs("records.jsonl.journal") == base + 1
    assert book.records.commit.commits == 2
    last = [i for i, e in enumerate(trace.events) if e[0] == "write"][-1]
    assert trace.events[last + 1:] == [("sync", "records.jsonl.journal", b"")]  # all synced
    book.records.close()


def test_a_sigkill_before_the_minus_lines_were_written_records_no_task_twice(tmp_path):
    """Rule: record lines written but not yet committed (their '-' lines wait for the next
    group commit) are found in records.jsonl after a SIGKILL: the next start records none of
    their tasks again, and the tasks still open get one lost/crash line each."""
    path = str(tmp_path / "records.jsonl")
    clock = Clock()
    book = SourceBook("s1", RecordWriter(path, clock=clock))
    book.records.flush()  # a commit now: the next is a gap away
    tasks = [book.new(X, 1, 1000.0 + i, 10.0 + i) for i in range(6)]
    for t in tasks[:4]:
        book.complete(dict(RESULT, id=t.id), 1001.0, 11.0)
    book.records.flush()
    with open(path + ".journal") as f:
        assert not any(line.startswith("-") for line in f)  # written, not yet committed
    del book  # SIGKILL: no close
    again = SourceBook("s1", RecordWriter(path))
    assert again.recover(2000.0, 20.0) == 2
    again.records.close()
    recs = _final_lines(path)
    assert sorted(r["id"] for r in recs) == sorted(t.id for t in tasks)
    assert {r["id"] for r in recs if r["reason"] == "crash"} == {t.id for t in tasks[4:]}


def test_a_records_file_that_cannot_be_synced_counts_as_synced():
    """Rule: records written to a device that takes no fdatasync (EINVAL: /dev/null) are not a
    failing sync: the commit succeeds and nothing is counted or logged."""
    w = RecordWriter("/dev/null", journal=False)
    w.write({"id": "t1", "status": "completed"})
    assert w.flush() and w.sync()
    assert w.sync_faults.failures == 0
    w.close()
