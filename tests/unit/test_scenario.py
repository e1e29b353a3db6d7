"""Scenario files: every error names the field; the writer round-trips through the parser."""

import copy
import json
import os

import numpy as np
import pytest

from agent.cli import main
from agent.scenario.format import (ScenarioError, load_scenario, parse_scenario, save_scenario,
                            scenario_to_json)
from agent.scenario.paper import paper_scenario

BASE = {
    "stages": [{"flops": 2.21e9, "input_bytes": 140000, "exit": False},
               {"flops": 1.97e9, "input_bytes": 770000, "exit": True}],
    "remaining": [1.0, 1.0],
    "sources": [{"id": "ed0", "rate": 4.8}],
    "workers": [{"id": "w1", "stage": 1, "capacity": 1.2e11},
                {"id": "w2", "stage": 2, "capacity": 1.0e11,
                 "power_modes": {"MAXN": 1.0e11, "15W": 5e10}}],
    "links": [{"from": "ed0", "to": "w1", "rate": 5.0e6},
              {"from": "w1", "to": "w2", "rate": 1.5e7}],
    "tradeoff": 0.5,
}


def _set(obj, path, value):
    *head, last = path
    for key in head:
        obj = obj[key]
    if value is _DELETE:
        del obj[last]
    else:
        obj[last] = value


_DELETE = object()


@pytest.mark.parametrize("path,value,field", [
    (("stages", 0, "flops"), -1, "stages[0].flops"),
    (("stages", 1, "exit"), "yes", "stages[1].exit"),
    (("sources", 0, "rate"), _DELETE, "sources[0].rate"),
    (("sources", 0, "rate"), float("nan"), "sources[0].rate"),
    (("workers", 1, "stage"), 3, "workers[1].stage"),
    (("workers", 0, "capacity"), "fast", "workers[0].capacity"),
    (("workers", 1, "power_modes"), {"MAXN": 0}, "workers[1].power_modes.MAXN"),
    (("workers", 1, "power_modes"), [1e10], "workers[1].power_modes"),
    (("workers", 1, "id"), "ed0", "workers[1].id"),
    (("links", 0, "to"), "w9", "links[0].to"),
    (("links", 1, "to"), "w1", "links[1]"),
    (("links", 1, "rate"), 0, "links[1].rate"),
    (("remaining",), [1.0], "remaining"),
    (("remaining",), [0.5, 1.0], "remaining[0]"),
    (("tradeoff",), 1.5, "tradeoff"),
    (("knobs",), [1], "knobs"),
    (("comment",), 3, "comment"),
    (("synthetic",), "no", "synthetic"),
    (("extra",), 1, "unknown field"),
    (("workers", 0, "capcity"), 1.2e11, "workers[0].capcity: unknown field (did you mean 'capacity'?)"),
    (("stages", 1, "exits"), True, "stages[1].exits: unknown field (did you mean 'exit'?)"),
    (("links", 0, "rates"), 1.0, "links[0].rates: unknown field (did you mean 'rate'?)"),
    (("sources", 0, "devce"), "cam", "sources[0].devce: unknown field (did you mean 'device'?)"),
])
def test_scenario_error_names_the_field(path, value, field):
    """A bad value anywhere in the file raises ScenarioError whose message names that field."""
    obj = copy.deepcopy(BASE)
    _set(obj, path, value)
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(obj)
    assert field in str(exc.value)


def test_a_testbed_topology_given_as_a_scenario_is_named_as_one():
    """Rule: plan and simulate on a testbed topology file (a likely mix-up: both are JSON with
    sources, workers and links) say it is a topology and what they read instead, rather than
    naming its first field as unknown; the shipped ones and a bare one are both told so."""
    from agent.testbed.topology import load_topology

    with open(load_topology("default").path) as f:
        shipped = json.load(f)
    bare = {"sources": [{"id": "s1", "share": 1.0}], "workers": [{"id": "w1", "stage": 1}],
            "links": [{"from": "s1", "to": "w1"}]}
    for obj in (shipped, bare):
        with pytest.raises(ScenarioError, match="a testbed topology, not a scenario: plan and "
                                                "simulate read a scenario file"):
            parse_scenario(obj)


def test_exactly_one_of_remaining_and_exit_profile():
    """Giving both (or neither) of remaining/exit_profile is an error naming both."""
    obj = copy.deepcopy(BASE)
    obj["exit_profile"] = "p.npz"
    with pytest.raises(ScenarioError, match="remaining.*exit_profile"):
        parse_scenario(obj)


def test_missing_file_and_bad_json_are_one_line_errors(tmp_path, capsys):
    """load_scenario names the file; through the CLI it is one line and exit status 2."""
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(str(tmp_path / "absent.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{\"stages\": [\n")
    with pytest.raises(ScenarioError, match="line 2"):
        load_scenario(str(bad))
    assert main(["simulate", "--scenario", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0]


def test_a_bad_field_in_a_file_is_named_after_the_file(tmp_path):
    """Read from a file, a field's error is led by the file's path (a plan over several
    scenarios says which one is wrong)."""
    obj = copy.deepcopy(BASE)
    _set(obj, ("stages", 0, "exit"), "yes")
    path = tmp_path / "s.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ScenarioError) as exc:
        load_scenario(str(path))
    assert str(exc.value).startswith("%s: stages[0].exit: " % path)


@pytest.mark.parametrize("knobs,message", [
    ({"rounds": 0}, "knobs.rounds: must be an integer in [1, 100000], got 0"),
    ({"roundz": 5}, "knobs.roundz: unknown field (did you mean 'rounds'?)"),
    ({"mdi-exit": 3}, "knobs.mdi-exit: must be an object {knob: value}, got 3"),
])
@pytest.mark.parametrize("command", ["plan", "simulate"])
def test_a_bad_knob_is_named_after_the_scenario_file(tmp_path, capsys, knobs, message, command):
    """A knob's error is led by the file's path like every other field's (it was checked after
    loading, and its line named no file), in plan and simulate alike: one line, exit 2."""
    obj = dict(copy.deepcopy(BASE), knobs=knobs)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ScenarioError) as exc:
        load_scenario(str(path))
    assert str(exc.value).startswith("%s: %s" % (path, message)), str(exc.value)
    argv = {"plan": ["plan", "-s", str(path)],
            "simulate": ["simulate", "--scenario", str(path), "--out", str(tmp_path / "o")]}
    assert main(argv[command]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-agent %s: error: %s: %s"
                                               % (command, path, message)), err


def test_writer_round_trips_fixed_remaining(tmp_path):
    """scenario_to_json is the inverse of parse_scenario (power modes included)."""
    sc = parse_scenario(copy.deepcopy(BASE))
    obj = scenario_to_json(sc)
    assert parse_scenario(json.loads(json.dumps(obj))) == sc
    path = tmp_path / "s.json"
    assert save_scenario(str(path), sc) == [str(path)]
    assert load_scenario(str(path)) == sc


def test_writer_saves_the_exit_profile_next_to_the_file(tmp_path):
    """A scenario with an exit profile is written with the profile beside it and reads back
    equal, profile arrays and synthetic label included."""
    sc = paper_scenario("paper-resnet101", seed=1, num_sources=5, num_samples=200)
    written = save_scenario(str(tmp_path / "sub" / "r.json"), sc)
    assert [p.rsplit("/", 1)[1] for p in written] == ["r.json", "r.exit_profile.npz"]
    assert sorted(os.listdir(str(tmp_path / "sub"))) == ["r.exit_profile.npz", "r.json"]
    back = load_scenario(written[0])
    assert back.workers == sc.workers and back.links == sc.links and back.stages == sc.stages
    assert back.synthetic and back.comment == sc.comment
    assert np.array_equal(back.exit_profile.confidence, sc.exit_profile.confidence)
    assert back.exit_profile.synthetic
    with pytest.raises(ScenarioError, match="exit_profile"):
        scenario_to_json(sc)


def _fail_json_writes(monkeypatch):
    """Make ``save_scenario``'s JSON write fail as a full disk does (the profile write works)."""
    from agent.scenario import format as fmt

    real = fmt.write_atomic

    def write(path, data, *args, **kwargs):
        if str(path).endswith(".json"):
            raise OSError(28, "No space left on device")
        return real(path, data, *args, **kwargs)

    monkeypatch.setattr(fmt, "write_atomic", write)


def test_a_failed_json_write_leaves_no_orphaned_profile_or_folder(tmp_path, monkeypatch):
    """save_scenario is all or nothing: when the JSON cannot be written, the exit profile it
    wrote first is removed again, as is the folder it made; the error is one line naming what
    was written (``--out``) and the path."""
    from agent.ops.files import FileFault

    sc = paper_scenario("paper-resnet101", seed=1, num_sources=5, num_samples=200)
    _fail_json_writes(monkeypatch)
    target = tmp_path / "sub" / "deeper" / "r.json"
    with pytest.raises(FileFault) as err:
        save_scenario(str(target), sc, "--out")
    assert str(err.value) == "--out: cannot write %s: No space left on device" % target
    assert os.listdir(str(tmp_path)) == []


def test_a_failed_json_write_puts_back_the_profile_it_replaced(tmp_path, monkeypatch):
    """Rewriting a scenario whose JSON then cannot be written leaves the previous pair as it
    was: the old JSON and the old profile it names (not the new one), and no temporary file."""
    from agent.ops.files import FileFault

    path = str(tmp_path / "r.json")
    old = paper_scenario("paper-resnet101", seed=1, num_sources=5, num_samples=200)
    save_scenario(path, old)
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(str(tmp_path))}
    _fail_json_writes(monkeypatch)
    new = paper_scenario("paper-resnet101", seed=2, num_sources=5, num_samples=300)
    with pytest.raises(FileFault, match="No space left on device"):
        save_scenario(path, new)
    assert {n: (tmp_path / n).read_bytes() for n in os.listdir(str(tmp_path))} == before
    assert np.array_equal(load_scenario(path).exit_profile.confidence,
                          old.exit_profile.confidence)


def test_a_directory_at_the_json_path_is_refused_before_the_profile_is_written(tmp_path):
    """The output paths are checked before anything is written: a directory where the JSON
    goes is a one-line error and no exit profile appears beside it."""
    from agent.ops.files import FileFault

    (tmp_path / "r.json").mkdir()
    sc = paper_scenario("paper-resnet101", seed=1, num_sources=5, num_samples=200)
    with pytest.raises(FileFault, match="r.json is a directory"):
        save_scenario(str(tmp_path / "r.json"), sc)
    assert os.listdir(str(tmp_path)) == ["r.json"]


@pytest.mark.parametrize("kind,message", [
    ("binary", "not a UTF-8 text file"), ("deep", "nested too deep"),
    ("directory", "is a directory"), ("fifo", "is a FIFO")])
def test_a_scenario_that_is_not_a_json_text_file_is_one_line(tmp_path, kind, message):
    """Binary bytes, JSON nested too deep for the parser, a directory or a FIFO (read without
    blocking) are ScenarioErrors naming the file, not tracebacks or a hang."""
    path = tmp_path / "s.json"
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "deep":
        path.write_text("[" * 100000)
    elif kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(str(path))
    with pytest.raises(ScenarioError, match=message):
        load_scenario(str(path))


@pytest.mark.parametrize("path,value", [
    (("sources", 0, "rate"), 1e308), (("stages", 0, "flops"), 1e200),
    (("workers", 0, "capacity"), 5e-324), (("links", 0, "rate"), 1e30)])
def test_scenario_numbers_far_outside_any_fleet_are_refused(path, value):
    """Capacities and link rates lie in [1, 1e24] (what the wire takes), rates and sizes in
    [1e-9, 1e24]: a scenario at the edge of the float range (the model's cubes overflowed, and
    plan's LP refused inf) is a one-line error."""
    obj = copy.deepcopy(BASE)
    section, i, key = path
    obj[section][i][key] = value
    low = "1" if key in ("capacity", "rate") and section in ("workers", "links") else "1e-09"
    with pytest.raises(ScenarioError, match=r"%s\[%d\]\.%s: must be in \[%s, 1e\+24\]"
                       % (section, i, key, low)):
        parse_scenario(obj)
