"""`edge-agent report` reads a rate's delays from its records' columns, and checks each line
at the cost of a few comparisons.

The delays behind a run's delay CDF are taken from the columns of the records files
(``RecordsFile.numbers``, ``RecordsFile.equals``) into one float64 array per rate, 8 bytes a
delay, with no list of every record of the rate held beside the summary's; they are the
floats a reading record by record gave. ``is_record`` takes exactly the lines the checks it
names take, whatever the types of their values.
"""

from __future__ import annotations

import gc
import json
import math
import random
import tracemalloc
from enum import IntEnum

import numpy as np

from agent.testbed import history
from agent.testbed.fleet import summarise_fleet
from agent.testbed.report_records import BATCH_ROWS, read_records, read_records_file
from agent.testbed.reportcheck import (MAX_STAGES, STATUSES, TIME_KEYS, _created, _finite,
                                       exit_stage_ok, is_record, times_ok)
from agent.testbed.runtopo import run_topology
from tests.unit.test_report_damaged import make_run
from tests.unit.test_report_streaming import _book_record, _dict_delays, _write


def _shapes(n, seed):
    """Records of several shapes: some only with a wall clock or an older record's times,
    an int among a column's floats, a bool or a string where a number may be, nulls."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        rec = _book_record(i, rng=rng)
        k = i % 9
        if k == 1:  # no monotonic clock: the wall clock's times
            del rec["created_mono"], rec["finished_mono"]
        elif k == 2:  # an older record: its unnamed clock
            for a in ("created_mono", "finished_mono", "created_wall", "finished_wall"):
                del rec[a]
            rec["created"], rec["finished"] = 50.0 + i, 50.25 + i
        elif k == 3:
            rec["created_wall"] = int(rec["created_wall"])  # an int in a float column
            rec["finished_wall"] = None
        elif k == 4:
            rec["confidence"] = rng.choice([True, "x", 7, None])
        out.append(rec)
    return out


def _number(v):
    return float(v) if type(v) in (int, float) else math.nan


def test_column_reads_equal_the_values_each_record_reads(tmp_path):
    """Rule: ``RecordsFile.numbers(key)`` is each record's ``key`` as a float in file order
    (NaN where absent, null, a bool or a string) and ``equals(key, v)`` each record's
    ``get(key) == v``, over records of several shapes and more than one batch of rows."""
    path = tmp_path / "records.jsonl"
    _write(path, _shapes(2 * BATCH_ROWS + 300, seed=5), ["{damaged\n"])
    held = read_records_file(str(path))
    recs = read_records(str(path))
    assert held.order is not None and len(held) == len(recs)  # several shapes, mixed
    for key in TIME_KEYS + ("confidence", "resends", "exit_stage", "no such key"):
        want = np.array([_number(r.get(key)) for r in recs])
        assert np.array_equal(held.numbers(key), want, equal_nan=True), key
    for key, value in (("status", "completed"), ("status", "lost"), ("confidence", True),
                       ("resends", 2), ("no such key", None)):
        assert held.equals(key, value).tolist() == [r.get(key) == value for r in recs], key


def test_the_delays_behind_the_cdf_equal_those_taken_record_by_record(tmp_path):
    """Rule: ``delays_after_warmup`` over a rate's files gives the floats a reading record by
    record gave (each task's first clock with both times, the completed tasks created after
    the rate's warm-up), in file order, as one float64 array."""
    files, recs = [], []
    for k, seed in enumerate((1, 2)):
        path = tmp_path / ("cam%d.jsonl" % k)
        _write(path, _shapes(1500, seed))
        files.append(read_records_file(str(path)))
        recs += [json.loads(json.dumps(dict(r))) for r in read_records(str(path))]
    for warmup_s in (0.0, 2, 30.5):
        got = history.delays_after_warmup(files, warmup_s)
        want = _dict_delays(recs, warmup_s)
        assert got.dtype == np.float64 and got.tolist() == want and len(want) > 100
    assert history.delays_after_warmup([], 2.0).tolist() == []


def test_a_runs_delays_are_held_in_an_array_at_8_bytes_a_delay(tmp_path):
    """Rule: what ``load_run`` keeps of a rate's delays (behind the delay CDF) costs about 8
    bytes a delay, not a boxed float each in a list (32 bytes a delay with its slot)."""
    run = make_run(tmp_path)
    n = 6000
    for sid in ("cam1", "cam2"):
        recs = [_book_record(i, source=sid, status="completed") for i in range(n)]
        _write(run / "cf" / "rate-1" / sid / "records.jsonl", recs)
    history.load_run(str(run))  # once untraced: the modules it imports are loaded
    tracemalloc.start()
    try:
        past = history.load_run(str(run))
        gc.collect()  # what the summary left in reference cycles is not held
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    delays = past.delays_s[("cf", 1.0)]
    assert len(delays) > n  # most of the 2n completed tasks come after the warm-up
    assert held / float(len(delays)) < 16  # about 34 bytes a delay in a list of floats


def test_a_fleet_rate_is_summarised_from_its_files_records_as_a_list_was(tmp_path):
    """Rule: a fleet run's rate (``kind: fleet``) gets the summary ``summarise_fleet`` gives
    over its records, and its delays, from the files its ``run.json`` names."""
    run = make_run(tmp_path)
    d = run / "cf" / "rate-2"
    obj = json.loads((d / "run.json").read_text())
    obj.update(kind="fleet")
    for key in ("expected", "stats", "load_s"):
        del obj[key]
    (d / "run.json").write_text(json.dumps(obj))
    for sid in ("cam1", "cam2"):
        _write(d / sid / "records.jsonl", _shapes(400, seed=len(sid) + 3)[::9])
    past = history.load_run(str(run))
    (res,) = [r for r in past.results if r.rate == 2.0]
    recs = [dict(r) for sid in ("cam1", "cam2")
            for r in read_records(str(d / sid / "records.jsonl"))]
    topo, _ = run_topology(str(run), "default")
    want = summarise_fleet(topo, "cf", 2.0, recs, obj["duration_s"])
    assert res.to_json() == want.to_json() and res.note.startswith("fleet")
    assert past.delays_s[("cf", 2.0)].tolist() == _dict_delays(recs, topo.warmup_s)


def _reference(obj):
    """``is_record`` spelled out from the checks its docstring names."""
    return (isinstance(obj, dict) and isinstance(obj.get("id"), str) and bool(obj["id"])
            and obj.get("status") in STATUSES and times_ok(obj)
            and _created(obj) is not None
            and (obj.get("resends") is None or _finite(obj["resends"]) and obj["resends"] >= 0)
            and (obj.get("correct") is None or isinstance(obj["correct"], bool))
            and exit_stage_ok(obj))


class _Stage(IntEnum):
    TWO = 2


def test_is_record_takes_exactly_what_its_checks_take_whatever_the_value_types():
    """Rule: ``is_record`` takes a record exactly when the checks it names (``times_ok``,
    ``exit_stage_ok``, the id, status, creation time, resends and correct) all take it, for
    JSON's own values and others (a bool, NaN, infinities, a 400-digit int, numpy floats, an
    int subclass, strings, lists), so a line the checks refuse is still a damaged line."""
    vals = [None, 0, 1, -1, 0.0, 5.5, -5.5, 1e10, 1e10 + 1, -1e10, -1e10 - 1, 10 ** 400,
            math.nan, math.inf, -math.inf, True, False, "x", "", [], [1], 2 ** 60, 1e6,
            1e6 + 1e-3, np.float64(3.0), np.float64("nan"), _Stage.TWO, MAX_STAGES + 1, 4]
    special = {"id": ["a", "", 3, None], "status": list(STATUSES) + ["x", None, ["lost"]],
               "reason": ["crash", "x", None], "correct": [True, False, None, 1, "t"]}
    keys = list(TIME_KEYS) + ["id", "status", "resends", "correct", "exit_stage", "reason"]
    base = {"id": "a", "status": "completed", "created_mono": 100.0, "finished_mono": 100.5,
            "created_wall": 1.7e9, "finished_wall": 1.7e9 + 0.5, "delay_s": 0.5, "resends": 0,
            "correct": True, "exit_stage": 2, "reason": None}
    rng = random.Random(11)
    taken = refused = 0
    for _ in range(30000):
        rec = dict(base) if rng.random() < 0.7 else {}
        for _ in range(rng.randint(0, 4)):
            k = rng.choice(keys)
            if rng.random() < 0.15:
                rec.pop(k, None)
            else:
                rec[k] = rng.choice(special.get(k, vals) if rng.random() < 0.6 else vals)
        if rng.random() < 0.2:  # delays at the edges of their range
            a = rng.choice([0.0, 5.0, 9.9e9])
            rec.update(created_mono=a, finished_mono=a + rng.choice([-1e-9, 0.0, 1e6, 1e6 + 1]))
        want = _reference(rec)
        assert is_record(rec) is want, rec
        taken, refused = taken + want, refused + (not want)
    assert taken > 3000 and refused > 3000
    for other in (None, 1, "s", [], [1], 2.0):
        assert not is_record(other)
