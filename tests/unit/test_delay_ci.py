"""The mean delay's 95% confidence interval: batch means over the tasks in creation order.

The rule (``agent.testbed.spread.batch_means_half_width``) on synthetic delays with a known
mean, the summary that feeds it, and where it shows: the table's ``mean ms`` column
(``97.8±6.1``), ``results.json`` (``mean_delay_ci_s``), ``report`` on a run folder written
before the key existed, the side-by-side table and the delay plot.
"""

from __future__ import annotations

import io
import json
import math
import random

import numpy as np
import pytest

from agent.cli import main
from agent.testbed.report import (RUN_KEYS, format_table, summarise_records, write_json,
                                  write_plots)
from agent.testbed.spread import (BATCHES, T_975, batch_means_half_width, mean_ms_cell,
                                  plus_minus_for)


def test_half_width_is_t_times_the_sd_of_ten_batch_means_over_root_ten():
    """Rule: k = 10 contiguous batches, half-width = t(0.975, 9) x sd(batch means, ddof=1) /
    sqrt(10), with t = 2.262; batches of nearly equal size when n is no multiple of 10."""
    xs = [float(i) for i in range(20)]  # batch means 0.5, 2.5, ..., 18.5
    sd = math.sqrt(sum((m - 9.5) ** 2 for m in [0.5 + 2 * i for i in range(10)]) / 9)
    assert batch_means_half_width(xs) == pytest.approx(2.262 * sd / math.sqrt(10))
    ys = [float((i * 7) % 11) for i in range(25)]  # batches of 2 or 3
    means = [np.mean(ys[i * 25 // 10:(i + 1) * 25 // 10]) for i in range(10)]
    assert sorted({(i + 1) * 25 // 10 - i * 25 // 10 for i in range(10)}) == [2, 3]
    assert batch_means_half_width(ys) == pytest.approx(
        2.262 * np.std(means, ddof=1) / math.sqrt(10))


def test_fewer_than_two_tasks_per_batch_give_no_interval_and_equal_delays_a_zero_one():
    """Rule: under 20 delays (2 per batch) there is no interval (None); 20 equal delays have
    an interval of width 0."""
    assert BATCHES == 10
    assert batch_means_half_width([0.1] * 19) is None
    assert batch_means_half_width([]) is None
    assert batch_means_half_width([0.1] * 20) == pytest.approx(0.0, abs=1e-15)


def test_other_batch_counts_use_their_own_t_and_unknown_ones_are_refused():
    """Rule: 5 batches use t(0.975, 4) = 2.776 and need 10 values; a batch count without a t
    in the table is a ValueError naming it."""
    xs = [1.0, 3.0] * 5
    means = [2.0] * 5
    assert batch_means_half_width(xs, batches=5) == pytest.approx(2.776 * np.std(means, ddof=1))
    assert batch_means_half_width(xs[:9], batches=5) is None
    for bad in (1, 21):
        with pytest.raises(ValueError, match="batches: must be 2 to 20, got %d" % bad):
            batch_means_half_width(xs, batches=bad)


def test_the_t_table_holds_students_t_quantiles():
    """Rule: each entry of the t table is Student's t 0.975 quantile for its degrees of
    freedom, to the three decimals kept."""
    stats = pytest.importorskip("scipy.stats")
    for df, t in T_975.items():
        assert t == pytest.approx(stats.t.ppf(0.975, df), abs=6e-4), df


def test_independent_normal_delays_are_covered_in_about_95_percent_of_runs():
    """Rule: for i.i.d. normal delays the interval covers the true mean in about 95% of runs
    (2,000 seeded runs of 200 delays; the seed is fixed, the bounds 4 standard errors wide)."""
    rng = np.random.default_rng(20240611)
    true_mean_s = 0.1
    covered = 0
    for _ in range(2000):
        xs = rng.normal(true_mean_s, 0.03, 200)
        covered += abs(xs.mean() - true_mean_s) <= batch_means_half_width(list(xs))
    assert 0.93 <= covered / 2000 <= 0.97, covered


def test_autocorrelated_delays_are_covered_by_batch_means_and_not_by_the_plain_error():
    """Rule: delays that follow one another through the queues (AR(1), phi 0.9) are covered
    in about 95% of runs by batch means, while the plain standard error (1.96 sd / sqrt(n))
    covers the true mean in only about a third of them."""
    rng = np.random.default_rng(7)
    phi, n, runs, true_mean_s = 0.9, 1000, 400, 0.1
    xs = np.empty((runs, n))
    xs[:, 0] = rng.normal(0.0, 1.0 / math.sqrt(1 - phi * phi), runs)  # stationary start
    noise = rng.normal(0.0, 1.0, (runs, n))
    for t in range(1, n):
        xs[:, t] = phi * xs[:, t - 1] + noise[:, t]
    xs = true_mean_s + 0.01 * xs
    batch = naive = 0
    for row in xs:
        err = abs(row.mean() - true_mean_s)
        batch += err <= batch_means_half_width(list(row))
        naive += err <= 1.96 * row.std(ddof=1) / math.sqrt(n)
    assert batch / runs >= 0.88, batch
    assert naive / runs <= 0.5, naive


def _task(i, created_s, delay_s, source="cam1"):
    return {"id": "%s-%d" % (source, i), "source": source, "status": "completed",
            "created_mono": created_s, "finished_mono": created_s + delay_s, "correct": True,
            "exit_stage": 4}


def test_the_summary_takes_the_completed_tasks_in_creation_order():
    """Rule: ``summarise_records`` computes ``mean_delay_ci_s`` over the completed tasks'
    delays in creation order, whatever order the records come in (a records file is in the
    order the answers came), leaving out tasks that did not complete."""
    delays = [0.05 + 0.002 * i + 0.01 * math.sin(i) for i in range(60)]  # a trend: batches differ
    recs = [_task(i, 100.0 + 0.1 * i, d) for i, d in enumerate(delays)]
    shuffled = list(recs)
    random.Random(3).shuffle(shuffled)
    shuffled.append({"id": "x", "source": "cam1", "status": "lost", "created_mono": 101.0})
    r = summarise_records(shuffled, "cf", 10.0, False)
    assert r.mean_delay_ci_s == pytest.approx(batch_means_half_width(delays))
    in_file_order = batch_means_half_width([x["finished_mono"] - x["created_mono"]
                                            for x in shuffled[:-1]])
    assert r.mean_delay_ci_s != pytest.approx(in_file_order)
    assert summarise_records(recs[:19], "cf", 10.0, False).mean_delay_ci_s is None


def _run(n, spread_s=0.0, policy="cf"):
    recs = [_task(i, 100.0 + 0.1 * i, 0.0978 + spread_s * (1 if i % 20 < 10 else -1))
            for i in range(n)]
    return summarise_records(recs, policy, 10.0, False)


def test_the_table_shows_the_mean_with_its_interval_and_a_dash_without_one():
    """Rule: the ``mean ms`` cell is the mean and the interval's half-width, ``97.8±6.1``;
    with no interval (under 20 tasks) ``±-``; one token, so the columns still split on
    blanks."""
    wide, few = _run(40, 0.004), _run(12)
    text = format_table([wide, few], plus_minus="±")
    head, _, row1, row2 = text.splitlines()
    col = head.split().index("mean")  # "mean ms" is two words in the heading
    hw_ms = wide.mean_delay_ci_s * 1e3
    assert row1.split()[col] == "97.8±%.1f" % hw_ms and hw_ms > 0
    assert row2.split()[col] == "97.8±-"
    assert row1.split()[col + 1] == "%.1f" % (wide.p95_delay_s * 1e3)  # p95 follows
    assert mean_ms_cell(None, None) == "-"
    assert "97.8+-" in format_table([wide], plus_minus="+-")


def test_the_sign_falls_back_to_ascii_where_the_output_cannot_encode_it():
    """Rule: ``±`` where stdout's encoding has it (UTF-8, Latin-1), ``+-`` where it does not
    (ASCII) or there is no stream, so printing the table never fails."""
    def stream(enc):
        return io.TextIOWrapper(io.BytesIO(), encoding=enc)

    assert plus_minus_for(stream("utf-8")) == "±"
    assert plus_minus_for(stream("latin-1")) == "±"
    assert plus_minus_for(stream("ascii")) == "+-"
    assert plus_minus_for(None) == "+-"


def test_results_json_has_the_half_width_after_the_mean(tmp_path):
    """Rule: a run object in results.json has ``mean_delay_ci_s`` (seconds, null without an
    interval) right after ``mean_delay_s``."""
    assert RUN_KEYS[RUN_KEYS.index("mean_delay_s") + 1] == "mean_delay_ci_s"
    path = tmp_path / "results.json"
    write_json(str(path), [_run(40, 0.004), _run(12)])
    runs = json.loads(path.read_text())["runs"]
    assert list(runs[0])[:len(RUN_KEYS)] == list(RUN_KEYS)
    assert runs[0]["mean_delay_ci_s"] == pytest.approx(_run(40, 0.004).mean_delay_ci_s)
    assert runs[1]["mean_delay_ci_s"] is None


def test_the_delay_plot_takes_runs_with_and_without_an_interval(tmp_path):
    """Rule: the delay-vs-rate plot draws the interval as error bars; a run without one (or
    without a mean) is still drawn, and both plots are written."""
    pytest.importorskip("matplotlib")
    runs = [_run(40, 0.004), _run(12, policy="bf"), summarise_records([], "dtoee", 5.0, False)]
    paths = write_plots(str(tmp_path), runs)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["delay_vs_rate.png", "accuracy_vs_rate.png"]
    assert all((tmp_path / p.rsplit("/", 1)[1]).stat().st_size > 1000 for p in paths)


def _old_run(folder, spread_s):
    """A run folder as the testbed wrote it before ``mean_delay_ci_s``: one (cf, 1.0) of 60
    tasks per source over 9 s (the default topology's warm-up is 3.5 s), and a results.json
    without the key."""
    folder.mkdir()
    (folder / "testbed.json").write_text(json.dumps({
        "topology": "default", "mdi_mode": None, "policies": ["cf"], "rates": [1.0],
        "duration_s": 5.5, "seed": 1, "network": "loopback", "faults": []}))
    d = folder / "cf" / "rate-1"
    for s in ("cam1", "cam2"):
        (d / s).mkdir(parents=True)
        (d / s / "records.jsonl").write_text("".join(
            json.dumps(dict(_task(i, 100.0 + 0.15 * i, 0.05 + spread_s * ((i // 7) % 3), s),
                            created_wall=1e9 + 0.15 * i)) + "\n"
            for i in range(60)))
    (d / "run.json").write_text(json.dumps({
        "kind": "local", "policy": "cf", "rate": 1.0,
        "records": {"cam1": "cam1/records.jsonl", "cam2": "cam2/records.jsonl"},
        "expected": {"cam1": 60, "cam2": 60}, "stats": {}, "duration_s": 5.5, "load_s": 9.0}))
    old = {k: None for k in RUN_KEYS if k != "mean_delay_ci_s"}
    old.update(policy="cf", rate=1.0, created=120, completed=120, lost=0, faults=[])
    (folder / "results.json").write_text(json.dumps({"runs": [old], "complete": True}))
    return folder


def test_report_gives_old_run_folders_the_interval_too(tmp_path, capsys):
    """Rule: ``report`` recomputes the interval from the records, so a run folder whose
    results.json lacks ``mean_delay_ci_s`` gets it in its table, in ``--json`` and in the
    side-by-side table, the same numbers as the summary of those records."""
    a = _old_run(tmp_path / "20260101-000000", 0.01)
    b = _old_run(tmp_path / "20260101-000001", 0.0)
    out_json = tmp_path / "report.json"
    assert main(["report", str(a), str(b), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out_json.read_text())["runs"]
    hw_a, hw_b = rows[0]["mean_delay_ci_s"], rows[1]["mean_delay_ci_s"]
    assert hw_a > 0 and hw_b == pytest.approx(0.0, abs=1e-12)
    mean_a = rows[0]["mean_delay_s"] * 1e3
    cell_a = "%.1f±%.1f" % (mean_a, hw_a * 1e3)  # captured output is UTF-8
    table_a = out.split("run %s" % b)[0]
    assert cell_a in table_a.split(), table_a
    side = out[out.index("side by side"):]
    row = [line for line in side.splitlines() if line.startswith("cf ")]
    assert row and ("%s (" % cell_a) in row[0] and "50.0±0.0 (" in row[0], side
