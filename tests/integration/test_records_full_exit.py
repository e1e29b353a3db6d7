"""A source stopped while its disk is full: its last record lines still reach a line.

Once the disk fills, the journal line of every task created afterwards fails too, so a record
line still unwritten at exit had nothing to recover it at the next start (a soak run lost 774
of 7,794 tasks that way, after a warning promising their recovery). The writer keeps 1 MiB of
the disk in a file of its own (``agent.ops.reserve``) and gives it back for the final flush;
a line that still has no place on disk is logged at ERROR, and the exit warning promises
recovery only for tasks that have a journal line. Real files on a small tmpfs (root only).
"""

from __future__ import annotations

import json
import os

from agent.node.records import RESERVE_SUFFIX, RecordWriter

from .tmpfs import fill, tmpfs


def _record(tid: str) -> dict:
    return {"id": tid, "status": "completed", "created_wall": 1.0, "finished_wall": 2.0}


def _lines(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["id"] for line in f if line.strip()]


def test_the_final_flush_on_a_full_disk_uses_the_room_kept_for_it(tmp_path):
    """Rule: with the disk full (journal and records failing for every task created since),
    close() gives back the kept room and writes every buffered line; the reserve file is gone."""
    with tmpfs(str(tmp_path / "disk"), 3 << 20) as disk:
        path = os.path.join(disk, "records.jsonl")
        w = RecordWriter(path)
        assert os.path.getsize(path + RESERVE_SUFFIX) == 1 << 20
        fill(disk)
        ids = ["t%d" % i for i in range(300)]
        for tid in ids:
            w.opened(tid, 1.0, 1.0, 0)
            w.write(_record(tid))
        assert not w.flush() and w.buffered == 300
        w.close()
        assert _lines(path) == ids and w.untraced == 0
        assert not os.path.exists(path + RESERVE_SUFFIX)


def test_lines_with_no_room_and_no_journal_line_are_logged_and_counted(tmp_path, caplog):
    """Rule: on a disk full from the start (no room could be kept), a line still unwritten at
    exit whose task has no journal line is logged at ERROR with the record itself and counted
    (``untraced``); those whose task has a journal line are promised as crash records only."""
    with tmpfs(str(tmp_path / "disk"), 1 << 20) as disk:
        path = os.path.join(disk, "records.jsonl")
        filler = fill(disk)
        os.truncate(filler, os.path.getsize(filler) - 4096)  # one page: the journal's
        w = RecordWriter(path)
        assert not os.path.exists(path + RESERVE_SUFFIX)
        ids = []
        while not w.journal_faults.failures:  # journal lines until that page is full
            ids.append("t%d" % len(ids))
            w.opened(ids[-1], 1.0, 1.0, 0)
        for k in range(3):
            ids.append("late%d" % k)
            w.opened(ids[-1], 1.0, 1.0, 0)
        for tid in ids:
            w.write(_record(tid))
        with caplog.at_level("WARNING", logger="agent.run"):
            w.close()
    untraced = len(ids) - ids.index("late0") + 1  # the first failed journal line and after
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == untraced == w.untraced, errors
    assert all("no journal line" in e for e in errors) and '"id":"late2"' in errors[-1]
    crash = [r.getMessage() for r in caplog.records if "recorded as lost (crash)" in r.getMessage()]
    assert len(crash) == 1 and crash[0].startswith("%d record line(s)" % (len(ids) - untraced))
