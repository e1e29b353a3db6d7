"""`edge-agent report` holds a long run's records compactly, and reports them as before.

Records are read line by line into columns (``agent.testbed.report_records``): each reads back
as a mapping equal to the dict its line decodes to, a long run costs a few hundred bytes a task
instead of a dict's kilobytes, readers of one unchanged file share one parse, and every figure
of the report (its table, its ``--json``) is the one the summary gave from a dict per record.
"""

from __future__ import annotations

import json
import math
import os
import random
import tracemalloc
from collections import Counter

import pytest

from agent.cli import main
from agent.testbed import faultlog, fleet, history, local, report, summary_window
from agent.testbed.report import (RunResult, batch_means_half_width, error_kind, error_text,
                                  is_record, percentile, read_records, summarise_records)
from agent.testbed.reportcheck import _created, _delay
from agent.testbed.report_records import BATCH_ROWS, SHARED_VALUES_MAX
from tests.unit.test_report_damaged import make_run


def _book_record(i, source="cam1", t0=100.0, status=None, rng=None):
    """A record as a source's book writes it (agent.node.book._record)."""
    rng = rng or random.Random(i)
    status = status or rng.choice(["completed"] * 8 + ["lost", "rejected"])
    c = t0 + 0.05 * (i // 3)  # three tasks share each creation time
    rec = {"id": "%s-%016x" % (source, rng.getrandbits(64)), "source": source, "status": status,
           "created_wall": 1.7e9 + c, "created_mono": c, "finished_wall": 1.7e9 + c + 0.2,
           "finished_mono": c + rng.uniform(0.01, 0.6), "delay_s": 0.2, "exit_stage": None,
           "cls": None, "label": rng.randrange(10), "correct": None, "confidence": None,
           "hops": 0, "resends": rng.choice([0, 0, 0, 2]), "attempts": 1, "worker": None,
           "reason": None, "row": rng.randrange(5000), "level": None}
    if status == "completed":
        rec.update(exit_stage=rng.randint(1, 4), cls=rng.randrange(10),
                   correct=rng.random() < 0.9, confidence=rng.random(), hops=rng.randint(1, 4),
                   worker=rng.choice(["w1a", "w2b", "w3a", "w4b"]))
    else:
        rec["reason"] = rng.choice(["no result after 3 re-issues", "admission: queue full"])
    return rec


def _write(path, recs, extra_lines=()):
    with open(str(path), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
        f.writelines(extra_lines)


def _same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def test_records_read_back_equal_to_their_decoded_lines_with_keys_in_order_and_types_kept(
        tmp_path):
    """Rule: each record ``read_records`` gives is a mapping equal to the dict its line decodes
    to, its keys in the line's order and each value of the line's type (a column of floats that
    meets a null, an int, a bool or an int beyond 64 bits keeps every value as written);
    damaged lines are numbered as before."""
    rng = random.Random(7)
    values = [None, True, False, 0, 3, -7, 2 ** 70, 1.5, 2.0, "w1a", "", [1, 2], {"k": 1}]
    recs = []
    for i in range(2 * BATCH_ROWS + 808):  # over two batches of rows
        rec = _book_record(i, rng=rng)
        if i >= 2 * BATCH_ROWS and i % 7 == 0:  # columns of floats (with nulls) and ints
            # meet values of other types in the third batch, in several shapes
            for k in ("confidence", "row", "label", "level", "worker"):
                rec[k] = rng.choice(values)
            rec["created_wall"] = int(rec["created_wall"])  # a float column meets an int
        if i % 11 == 0:
            rec["detail"] = "input values in [%d, %d]" % (i, i + 1)
        recs.append(rec)
    path = tmp_path / "records.jsonl"
    _write(path, recs, ["not json\n", '{"id": 5}\n', "\n", '{"id": "torn'])
    bad = []
    got = read_records(str(path), bad)
    want = [json.loads(json.dumps(r)) for r in recs]
    assert bad == [len(recs) + 1, len(recs) + 2] and len(got) == len(want)
    for g, w in zip(got, want):
        assert list(g) == list(w) and len(g) == len(w) and g == w and w == g
        assert all(_same(g[k], w[k]) and _same(g.get(k), w[k]) for k in w), (dict(g), w)
        assert g.get("no such key", "d") == "d" and "no such key" not in g and "id" in g
        with pytest.raises(KeyError):
            g["no such key"]


def test_a_column_of_many_distinct_strings_stops_sharing_them_and_reads_back_the_same(
        tmp_path):
    """Rule: a string column with more than SHARED_VALUES_MAX distinct values (task ids, a
    detail per input) keeps each value as it came, every one still read back."""
    recs = [_book_record(i) for i in range(SHARED_VALUES_MAX + 50)]
    path = tmp_path / "records.jsonl"
    _write(path, recs)
    assert [r["id"] for r in read_records(str(path))] == [r["id"] for r in recs]


def _peak_bytes_per_record(path, n):
    tracemalloc.start()
    try:
        recs = read_records(str(path))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(recs) == n
    return held / float(n)


def test_a_long_runs_records_are_held_in_columns_at_a_few_hundred_bytes_a_task(tmp_path):
    """Rule: the records of a long run cost a few hundred bytes a task once read (under 500),
    not a dict each (about 2 kB a task with its values; 300,000 tasks took 1.4 GB)."""
    n = 20000
    path = tmp_path / "records.jsonl"
    _write(path, [_book_record(i) for i in range(n)])
    assert _peak_bytes_per_record(path, n) < 500


def test_readers_of_one_unchanged_file_share_one_parse_and_a_changed_file_is_read_again(
        tmp_path):
    """Rule: while records of a file are held, reading the unchanged file again gives records
    of the same parse (with its damaged lines named again); a file rewritten in place, even to
    the same size and modification time, is read again."""
    path = tmp_path / "records.jsonl"
    recs = [_book_record(i, status="completed") for i in range(50)]
    _write(path, recs, ["junk\n"])
    bad1, bad2 = [], []
    first = read_records(str(path), bad1)
    again = read_records(str(path), bad2)
    assert bad1 == bad2 == [51]
    assert again[0]._f is first[0]._f and again == first
    st = os.stat(str(path))
    text = path.read_bytes()
    edited = text.replace(b'"status": "completed"', b'"status": "rejected!"', 1)
    assert len(edited) == len(text) and edited != text
    path.write_bytes(edited.replace(b'"rejected!"', b'"rejected" ', 1))
    os.utime(str(path), ns=(st.st_atime_ns, st.st_mtime_ns))
    third = read_records(str(path))
    assert third[0]._f is not first[0]._f and third[0]["status"] == "rejected"
    assert [r["status"] for r in first[:1]] == ["completed"]  # what was read stays as read


# The summary as it was made from a dict per record: the reference every figure must equal.

def _dict_records(path, bad=None):
    out = []
    with open(path, "rb") as f:
        for no, raw in enumerate(f, start=1):
            torn = not raw.endswith(b"\n")
            try:
                obj = json.loads(raw.decode("utf-8"))
            except ValueError:
                if not torn and raw.strip() and bad is not None:
                    bad.append(no)
                continue
            if is_record(obj):
                out.append(obj)
            elif bad is not None:
                bad.append(no)
    return out


def _dict_summary(records, policy, rate, capacities_emulated, model_delay_s=None,
                  duration_s=0.0, expected_created=None):
    by_id = {}
    for i, rec in enumerate(records):
        by_id["%s/%s" % (rec.get("source", ""), rec.get("id", i))] = rec
    delays, correct, completed, rejected = [], 0, 0, 0
    errors, said, resent, exits = Counter(), {}, 0, Counter()
    for place, rec in enumerate(by_id.values()):
        if int(rec.get("resends", 0) or 0) > 0:
            resent += 1
        if rec.get("status") == "rejected":
            rejected += 1
        if rec.get("status") == "error":
            kind = error_kind(error_text(rec))
            said.setdefault(kind, error_text(rec))
            errors[kind] += 1
        if rec.get("status") != "completed":
            continue
        completed += 1
        d = _delay(rec)
        if d is not None:
            delays.append((_created(rec) or 0.0, place, d))
        if rec.get("correct") is True:
            correct += 1
        st = rec.get("exit_stage")
        if isinstance(st, int) and not isinstance(st, bool):
            exits[st] += 1
    created = len(by_id)
    if expected_created is not None:
        created = max(created, int(expected_created))
    ds = [d for _, _, d in sorted(delays)]
    return RunResult(
        policy=policy, rate=float(rate), created=created, completed=completed,
        lost=created - completed - rejected - sum(errors.values()), rejected=rejected,
        error=sum(errors.values()), error_reasons={said[k]: n for k, n in errors.most_common(5)},
        mean_delay_s=(sum(ds) / len(ds)) if ds else None, p95_delay_s=percentile(ds, 95.0),
        mean_delay_ci_s=batch_means_half_width(ds),
        accuracy=(correct / completed) if completed else None,
        model_delay_s=model_delay_s, capacities_emulated=capacities_emulated,
        duration_s=float(duration_s), resent=resent, exit_counts=dict(exits))


def _mixed(n, seed):
    rng = random.Random(seed)
    recs = [_book_record(i, source=rng.choice(["cam1", "cam2"]), rng=rng) for i in range(n)]
    recs += [dict(recs[i], status="completed", exit_stage=2) for i in range(0, n, 17)]  # again
    recs += [dict(_book_record(n + i, rng=rng), status="error", reason="bad_input",
                  detail="input values in [%d, %d]" % (i, i + 1)) for i in range(7)]
    return recs


@pytest.mark.parametrize("case", ["mixed", "same id in two sources", "a source with a slash",
                                  "no id", "a number id"])
def test_the_summary_equals_the_one_made_from_a_dict_per_record(case):
    """Rule: ``summarise_records`` gives every figure (counts, mean, p95, interval, accuracy,
    exit counts, error kinds) exactly as the summary keyed by "source/id" over dicts did, for
    repeated ids, one id in two sources, sources whose name holds a "/", and tasks without id."""
    recs = _mixed(600, seed=3)
    if case == "same id in two sources":
        recs.append(dict(recs[5], source="cam2" if recs[5]["source"] == "cam1" else "cam1"))
    elif case == "a source with a slash":
        recs += [dict(recs[9], source="cam1/x", id="y"), dict(recs[9], source="cam1",
                                                               id="x/y", status="lost")]
    elif case == "no id":
        recs[20] = {k: v for k, v in recs[20].items() if k != "id"}
    elif case == "a number id":
        recs[30] = dict(recs[30], id=30)
    for expected in (None, 10 ** 4):
        got = summarise_records(recs, "cf", 3.0, True, duration_s=2.0, expected_created=expected)
        want = _dict_summary(recs, "cf", 3.0, True, duration_s=2.0, expected_created=expected)
        assert got.to_json() == want.to_json()


def _dict_delays(records, warmup_s):
    """The delays behind the CDF as they were taken from a dict per record, in a list."""
    created = [c for c in (_created(r) for r in records) if c is not None]
    end = min(created) + warmup_s if created else None
    return [_delay(r) for r in records if r.get("status") == "completed"
            and _created(r) is not None and _created(r) >= end and _delay(r) is not None]


def _old_path(monkeypatch):
    """Report as the code did with a dict per record: its reader and summary everywhere, and
    the CDF's delays taken record by record."""
    for mod in (local, summary_window, faultlog, report):
        monkeypatch.setattr(mod, "read_records", _dict_records)
    for mod in (local, fleet, report):
        monkeypatch.setattr(mod, "summarise_records", _dict_summary)
    monkeypatch.setattr(history, "delays_after_warmup", lambda files, warmup_s: _dict_delays(
        [json.loads(json.dumps(dict(r))) for f in files for r in f.records()], warmup_s))


def test_a_run_folders_report_and_json_equal_those_from_a_dict_per_record(
        tmp_path, capsys, monkeypatch):
    """Rule: `edge-agent report RUN --json F` prints the same table and writes the same JSON as
    it did from records held as one dict each, on a run folder whose records hold repeated ids,
    lost and rejected tasks, tasks created at one time and a damaged line."""
    run = make_run(tmp_path)
    for k, rate in enumerate(("rate-1", "rate-2")):
        for sid in ("cam1", "cam2"):
            recs = [_book_record(i, source=sid, rng=random.Random(k * 10 + len(sid) + i))
                    for i in range(800)]
            recs += recs[:40]
            _write(run / "cf" / rate / sid / "records.jsonl", recs, ["{damaged\n"])
    outs, delays = [], []
    for name in ("new.json", "old.json"):
        if name == "old.json":
            _old_path(monkeypatch)
        rc = main(["report", str(run), "--json", str(tmp_path / name)])
        out, err = capsys.readouterr()
        outs.append((rc, out, err, json.loads((tmp_path / name).read_text())))
        delays.append(history.load_run(str(run)).delays_s)  # behind the delay CDF
    assert outs[0][0] == 1 and "line 841 is not a task record" in outs[0][2]
    assert outs[0] == outs[1] and list(delays[0]) == list(delays[1])
    for key, new in delays[0].items():  # the same floats, 8 bytes each in an array
        assert new.dtype == "float64" and new.tolist() == delays[1][key] and len(new) > 900
    assert outs[0][3]["runs"][0]["created"] == 1600 and outs[0][3]["runs"][0]["mean_delay_s"]
