"""Tasks a source answered `error` (an input it refused, e.g. bad_input: NaN values) in the
testbed's fleet-mode records: a status of their own, counted apart from the lost ones, kept by
`report` as the testbed counted them, with what the source said."""

from __future__ import annotations

import json

from agent.protocol import wire
from agent.testbed.fleet import summarise_fleet
from agent.testbed.report import (STATUSES, error_lines, format_table, read_records,
                                  summarise_records)
from agent.testbed.topology import parse_topology

NAN = "input holds NaN, inf or values beyond +-1e+06"


def _rec(i, status, **extra):
    rec = {"id": "testbed-%d" % i, "source": "cam", "status": status,
           "created_mono": 100.0 + i, "finished_mono": 100.05 + i, "label": 1,
           "exit_stage": 1 if status == "completed" else 0}
    rec.update(extra)
    return rec


def _records():
    return ([_rec(i, "completed", cls=1, correct=True) for i in range(4)]
            + [_rec(4, "lost", reason="no answer within 70 s"),
               _rec(5, "rejected", reason="overload")]
            + [_rec(6 + i, "error", reason="bad_input", detail=NAN) for i in range(3)]
            + [_rec(9, "error", reason="bad_input",
                    detail="input uint8 (1, 28, 28, 1); stage 1 takes float32 (1, 1, 28, 28)")])


def test_the_record_statuses_are_the_answers_outcomes():
    """One list of record statuses, "error" among them: every outcome a source answers a
    client with is a fate a fleet-mode record can hold."""
    assert set(STATUSES) == set(wire.OUTCOMES) and "error" in STATUSES


def test_error_answers_are_counted_on_their_own_and_created_is_the_sum_of_the_fates():
    """created = completed + lost + rejected + error: an error answer is no loss, and the
    summary keeps what the sources said (reason: detail) with each kind's count; tasks without
    any record are still lost."""
    res = summarise_records(_records(), "cf", 10.0, True)
    assert (res.created, res.completed, res.lost, res.rejected, res.error) == (10, 4, 1, 1, 4)
    assert res.error_reasons == {"bad_input: " + NAN: 3, "bad_input: input uint8 (1, 28, 28, "
                                 "1); stage 1 takes float32 (1, 1, 28, 28)": 1}
    more = summarise_records(_records(), "cf", 10.0, True, expected_created=12)
    assert (more.created, more.lost, more.error) == (12, 3, 4)
    assert more.created == more.completed + more.lost + more.rejected + more.error
    as_json = res.to_json()
    assert as_json["error"] == 4 and as_json["lost"] == 1
    assert as_json["error_reasons"]["bad_input: " + NAN] == 3


def test_a_records_file_with_error_lines_is_read_whole(tmp_path):
    """A records line with status "error" is a task record, not a damaged line; a status
    outside the list still is one."""
    path = tmp_path / "records.jsonl"
    lines = [json.dumps(r) for r in _records()] + [json.dumps(_rec(10, "weird"))]
    path.write_text("\n".join(lines) + "\n")
    bad = []
    recs = read_records(str(path), bad)
    assert len(recs) == 10 and bad == [11]
    assert [r["detail"] for r in recs if r["status"] == "error"][0] == NAN


def test_the_error_column_appears_only_when_a_run_has_errors():
    """The table gets an `error` column, as it gets `rejected`, only when some run has error
    answers; its rows then add up to created."""
    clean = summarise_records(_records()[:5], "cf", 5.0, True)
    assert "error" not in format_table([clean]).splitlines()[0].split()
    table = format_table([clean, summarise_records(_records(), "cf", 10.0, True)])
    head = table.splitlines()[0].split()
    assert head[:7] == ["policy", "rate/s", "created", "completed", "lost", "rejected", "error"]
    row = table.splitlines()[3].split()
    assert row[2:7] == ["10", "4", "1", "1", "4"]


def test_the_error_line_says_what_the_sources_said():
    """One line per run with error answers: the count, and each kind of answer (reason and
    detail, the first few) with its count; none for a run without; a detail's control
    characters are not printed."""
    recs = _records() + [_rec(11, "error", reason="bad_input", detail="bad\x1b[2Jinput")]
    lines = error_lines([summarise_records(_records()[:5], "cf", 5.0, True),
                         summarise_records(recs, "cf", 10.0, True)])
    assert len(lines) == 1
    assert lines[0].startswith("ERROR 5 task(s) of cf at 10.0 tasks/s answered error by the "
                               "sources: bad_input: %s (3); " % NAN)
    assert "stage 1 takes float32 (1, 1, 28, 28) (1)" in lines[0]
    assert "bad?[2Jinput (1)" in lines[0] and "\x1b" not in lines[0]


def test_a_fleet_runs_error_count_covers_the_whole_run_as_created_does():
    """In fleet mode the counts are over the whole run, warm-up included: an error answered
    within the warm-up is counted, and created = completed + lost + rejected + error."""
    topo = parse_topology({
        "bundle": "demo", "warmup_s": 3.0, "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": "w%d" % s, "stage": s} for s in (1, 2, 3, 4)],
        "links": [{"from": "cam", "to": "w1"}, {"from": "w1", "to": "w2"},
                  {"from": "w2", "to": "w3"}, {"from": "w3", "to": "w4"}]}, ".")
    res = summarise_fleet(topo, "cf", 10.0, _records(), 6.0)
    assert (res.created, res.completed, res.lost, res.rejected, res.error) == (10, 4, 1, 1, 4)
    assert sum(res.error_reasons.values()) == 4


def test_inputs_refused_for_one_cause_count_as_one_kind_in_the_first_ones_words():
    """Rule: the source's words hold each input's own numbers (its values' range); refusals
    that differ only in numbers are one kind, shown as the first was said, so the ERROR line
    reads "... (3)" instead of one entry per input."""
    said = ["input values in [%d, %d], far outside the [0, 1] of the source's replay set: "
            "scale it as the model's inputs are" % (v, v + 5) for v in (200, 210, 250)]
    recs = [_rec(i, "error", reason="bad_input", detail=d) for i, d in enumerate(said)]
    res = summarise_records(recs, "cf", 10.0, True)
    assert res.error_reasons == {"bad_input: " + said[0]: 3}
