"""A rate cut short counts the tasks its sources created, not the tasks they were to create.

An interrupted rate's ``partial`` entry said ``created 114, completed 30, lost 84`` while the
sources had made 33: the planned ``max_tasks`` was taken as created, so tasks never made
counted as lost. The sources' records, journal and stats.json say what they made.
"""

from __future__ import annotations

import json

import pytest

from agent.testbed.created import created_so_far
from agent.testbed.driver import load_bundle_for
from agent.testbed.local import bundle_stages, partial_result
from agent.testbed.topology import load_topology
from tests.unit.test_report_damaged import _records


def _source(tmp_path, source, done, made, stats_created=None):
    """A source's state folder mid-run: ``done`` final lines, ``made`` tasks journalled (the
    first ``done`` of them closed again), optionally a stats.json."""
    d = tmp_path / source
    d.mkdir()
    (d / "records.jsonl").write_text(_records(source, done))
    journal = "".join("+%s\n" % json.dumps({"id": "%s-%d" % (source, i), "created_mono": 1.0})
                      for i in range(made))
    journal += "".join("-%s-%d\n" % (source, i) for i in range(done))
    (d / "records.jsonl.journal").write_text(journal)
    if stats_created is not None:
        (d / "stats.json").write_text(json.dumps({"tasks": {"created": stats_created}}))
    return str(d / "records.jsonl")


def test_created_so_far_is_what_records_journal_and_stats_name_at_most_the_plan(tmp_path):
    """Rule: a source created the tasks its records and journal name (or its stats.json's
    count when larger), never more than it was given to create."""
    recs = {"cam1": _source(tmp_path, "cam1", 20, 22), "cam2": _source(tmp_path, "cam2", 10, 11, 15),
            "cam3": _source(tmp_path, "cam3", 3, 3, 99)}
    assert created_so_far(recs, {"cam1": 68, "cam2": 46, "cam3": 50}) == {
        "cam1": 22, "cam2": 15, "cam3": 50}


def test_a_compacted_journal_still_counts_the_recorded_tasks(tmp_path):
    """Rule: tasks whose journal lines were compacted away still count, by their records."""
    path = _source(tmp_path, "cam1", 5, 0)
    (tmp_path / "cam1" / "records.jsonl.journal").write_text(
        "+%s\n" % json.dumps({"id": "cam1-9"}))
    assert created_so_far({"cam1": path}, {"cam1": 100}) == {"cam1": 6}


@pytest.fixture(scope="module")
def default_run():
    topo = load_topology("default")
    bundle = load_bundle_for(topo)
    return topo, bundle, bundle_stages(bundle)


def test_an_interrupted_rate_counts_only_the_tasks_its_sources_created(tmp_path, default_run):
    """Rule: a partial result has created = completed + rejected + lost over the tasks the
    sources made (33 here), not over the planned 114."""
    topo, bundle, stages = default_run
    recs = {"cam1": _source(tmp_path, "cam1", 20, 22), "cam2": _source(tmp_path, "cam2", 10, 11)}
    res = partial_result(topo, bundle, stages, "cf", 35.0, recs, {"cam1": 68, "cam2": 46},
                         3.0, 6.5, KeyboardInterrupt())
    assert (res.created, res.completed, res.rejected, res.lost) == (33, 30, 0, 3)
    assert res.note == "partial: interrupted"
