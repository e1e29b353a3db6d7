"""Start-up cost of a source's crash recovery against the size of records.jsonl.

After a crash, ``RecordWriter`` reads the journal and, when tasks in it have no ``-`` line,
scans ``records.jsonl`` for their final lines. The file is rotated at ``records_max_bytes``
(64 MiB by default) and the journal compacted first, so this scan reads one file of at most
about that size. This times opening a writer (the scan included) over real files of the given
sizes, with 16 journalled tasks left open by a "crash", on this machine's page cache (warm)
and after dropping it where allowed (cold: root only).

``--commit`` times the records path instead: each task journalled, recorded and flushed (a
flush per task, as a client-mode source's loop pass does at most), with the group commit
(``agent.node.journal``: fdatasync of records and journal at most once per ``COMMIT_GAP_S``)
and without it (no sync until close, as before it): tasks/s, CPU per task, syncs per second
and the time one commit takes, in ``--dir`` (a folder on the disk to measure; default: a
temporary one).

    python3 bench/records_recovery.py [--sizes 1,16,64,256] [--repeat 3]
    python3 bench/records_recovery.py --commit [--tasks 100000] [--dir PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _local import machine  # noqa: E402

from agent.node.records import RecordWriter  # noqa: E402


def _fill(path: str, mib: int) -> int:
    """A records.jsonl of about ``mib`` MiB of real-looking lines; the number of lines."""
    line = {"id": "", "source": "s1", "status": "completed", "reason": "", "label": 3,
            "cls": 3, "confidence": 0.93, "exit_stage": 2, "hops": 2, "resends": 0,
            "worker": "w2a", "created_wall": 1.7e9, "delay_s": 0.1234, "attempts": 1,
            "row": 1234, "levels": None}
    n, size = 0, 0
    with open(path, "w") as f:
        while size < mib << 20:
            line["id"] = "s1-%016x" % n
            text = json.dumps(line, separators=(",", ":")) + "\n"
            f.write(text)
            size += len(text)
            n += 1
    return n


def _crash(path: str) -> None:
    """A journal with 16 tasks open (no final line anywhere): the scan reads the whole file."""
    with open(path + ".journal", "w") as f:
        for i in range(16):
            f.write("+%s\n" % json.dumps({"id": "open-%d" % i, "created_wall": 1.7e9,
                                          "created_mono": 1.0, "label": 0}))


def _drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def _commit_run(folder: str, tasks: int, commit: bool) -> dict:
    """One run of the records path over ``tasks`` tasks; the figures of ``--commit``."""
    path = os.path.join(folder, "records.jsonl")
    for name in (path, path + ".journal"):
        if os.path.exists(name):
            os.unlink(name)
    w = RecordWriter(path)
    w.flush()  # the first commit (the files were just made), before the clock starts
    if not commit:
        w.commit.gap_s = float("inf")
    spent, real_sync = [], w.sync

    def timed_sync() -> bool:
        t = time.perf_counter()
        try:
            return real_sync()
        finally:
            spent.append(time.perf_counter() - t)
    w.sync = timed_sync  # type: ignore[assignment]
    syncs0 = w.commit.syncs
    rec = {"source": "s1", "status": "completed", "exit_stage": 2, "cls": 3, "label": 3,
           "correct": True, "confidence": 0.93, "hops": 2, "resends": 0, "attempts": 1,
           "worker": "w2a", "reason": None, "row": 1234, "level": None}
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(tasks):
        tid = "s1-%016x" % i
        w.opened(tid, 1.7e9 + i, 10.0 + i, 3)
        w.write(dict(rec, id=tid, created_wall=1.7e9 + i, finished_wall=1.7e9 + i + 0.1,
                     delay_s=0.1))
        w.flush()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    syncs, spent = w.commit.syncs - syncs0, list(spent)
    w.close()
    return {"tasks_s": tasks / wall, "cpu_us": cpu / tasks * 1e6, "syncs": syncs,
            "syncs_s": syncs / wall, "commit_ms": (statistics.mean(spent) * 1e3 if spent
                                                    else 0.0), "commits": len(spent)}


def commit_cost(folder: str, tasks: int, repeat: int) -> None:
    """The ``--commit`` table (module docstring)."""
    print("machine: %s; folder: %s" % (machine(), folder))
    print("| group commit | tasks/s | CPU us per task | syncs | syncs/s | ms per commit |")
    print("| --- | --- | --- | --- | --- | --- |")
    for commit in (False, True, False, True)[:2 * max(1, repeat)]:
        r = _commit_run(folder, tasks, commit)
        print("| %s | %.0f | %.1f | %d | %.2f | %s |" % (
            "on" if commit else "off", r["tasks_s"], r["cpu_us"], r["syncs"], r["syncs_s"],
            "%.2f (%d)" % (r["commit_ms"], r["commits"]) if commit else "-"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,16,64,256", help="records.jsonl sizes in MiB")
    ap.add_argument("--repeat", type=int, default=3, help="timed openings per size and cache")
    ap.add_argument("--commit", action="store_true", help="time the group commit instead")
    ap.add_argument("--tasks", type=int, default=100000, help="tasks per --commit run")
    ap.add_argument("--dir", default="", help="folder of the --commit runs (default: a temp)")
    args = ap.parse_args()
    if args.commit:
        if args.dir:
            os.makedirs(args.dir, exist_ok=True)
            commit_cost(args.dir, args.tasks, args.repeat)
        else:
            with tempfile.TemporaryDirectory(dir=os.getcwd()) as d:
                commit_cost(d, args.tasks, args.repeat)
        return
    print("machine: %s" % machine())
    print("| records.jsonl | lines | warm open (ms) | cold open (ms) | us per line (warm) |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as d:
        for mib in [int(s) for s in args.sizes.split(",")]:
            path = os.path.join(d, "records.jsonl")
            lines = _fill(path, mib)
            times = {"warm": [], "cold": []}
            for cache in ("warm", "cold"):
                for _ in range(args.repeat):
                    _crash(path)
                    if cache == "cold" and not _drop_caches():
                        break
                    t0 = time.perf_counter()
                    w = RecordWriter(path)
                    times[cache].append(time.perf_counter() - t0)
                    assert len(w.recovered()) == 16
                    w._fd, fd = -1, w._fd  # no flush or close: the file stays as it is
                    os.close(fd)
                    os.close(w._jfd)
            warm = statistics.median(times["warm"]) * 1e3
            cold = ("%.0f" % (statistics.median(times["cold"]) * 1e3)) if times["cold"] else "n/a"
            print("| %d MiB | %d | %.0f | %s | %.2f |" % (mib, lines, warm, cold,
                                                         warm * 1e3 / lines))


if __name__ == "__main__":
    main()
