"""Output options of the commands that write files (scenario, simulate, profile, build, heads):
a bad path or a non-finite number is one error line and exit 2, found before any work is done,
with nothing written; and the shared checks of agent/ops/files.py that say so.

Running as root, a permission cannot be made to fail: an unwritable place is a /proc path (the
kernel refuses to create anything there) and a folder that cannot be made is one under a
regular file.
"""

from __future__ import annotations

import json
import os

import pytest

from agent.cli import main
from agent.ops.files import FileFault, check_output_dir, check_output_file, output_errors

BASE = {"stages": [{"flops": 1e9, "input_bytes": 1000, "exit": True},
                   {"flops": 1e9, "input_bytes": 1000}],
        "remaining": [0.5, 1.0],
        "sources": [{"id": "s1", "rate": 2}],
        "workers": [{"id": "w1", "stage": 1, "capacity": 1e10},
                    {"id": "w2", "stage": 2, "capacity": 1e10}],
        "links": [{"from": "s1", "to": "w1", "rate": 1e6}, {"from": "w1", "to": "w2", "rate": 1e6}]}


def _fails(argv, capsys, *needles):
    """``edge-agent ARGV`` exits 2 with one ``error:`` line holding every needle, no traceback."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    line = [x for x in err.splitlines() if "error:" in x]
    assert len(line) == 1, err
    for needle in needles:
        assert needle in line[0], line[0]
    return line[0]


def _tree(path):
    return sorted(os.path.relpath(os.path.join(d, n), str(path))
                  for d, dirs, files in os.walk(str(path)) for n in dirs + files)


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A scratch folder as the working directory, with a regular file ``file.json`` in it."""
    monkeypatch.chdir(str(tmp_path))
    (tmp_path / "file.json").write_text("{}")
    return tmp_path


# --- the shared checks ---------------------------------------------------------------------

def test_check_output_file_refuses_a_directory_or_a_non_regular_file(work):
    """A file to write must not be a directory (no extension is ever added to one), a FIFO or a
    dangling link; a path ending in a separator names a directory."""
    os.mkfifo(str(work / "fifo"))
    os.symlink(str(work / "gone" / "x"), str(work / "dangling"))
    for path, why in ((str(work), "is a directory; give a file path"), ("fifo", "is a FIFO"),
                      ("dangling", "dangling link"), ("new/", "names a directory")):
        with pytest.raises(FileFault, match="--out: .*" + why):
            check_output_file(path, "--out")


def test_check_output_paths_accept_missing_folders_and_leave_nothing_behind(work):
    """A file in folders still to be made, an existing file and a new folder pass; the probes
    that tried the places are removed again."""
    before = _tree(work)
    check_output_file("a/b/c.json", "--out")
    check_output_file("file.json", "--out")
    check_output_dir("x/y", "--out")
    check_output_dir(str(work), "--out")
    assert _tree(work) == before


@pytest.mark.parametrize("path,why", [
    ("file.json/x.json", "file.json is a file, not a directory"),
    ("file.json/a/b/x.json", "file.json is a file, not a directory"),
    ("/proc/nope/x.json", "cannot create a directory in /proc"),
    ("/proc/x.json", "cannot write in /proc"),
    ("a" * 300 + ".json", "File name too long"),
])
def test_check_output_file_finds_a_place_nothing_can_be_written(work, path, why):
    """A folder that is a file, a place the kernel refuses and a name too long for the file
    system are each one FileFault naming the option."""
    with pytest.raises(FileFault, match="^--out: .*" + why):
        check_output_file(path, "--out")


def test_check_output_dir_without_probe_only_looks(work):
    """``probe=False`` (a dry run) still refuses a file where a folder goes, and creates
    nothing even where the probe would fail."""
    with pytest.raises(FileFault, match="is a file, not a directory"):
        check_output_dir("file.json/sub", "--root", probe=False)
    check_output_dir("/proc/nope", "--root", probe=False)


def test_output_errors_turn_an_oserror_into_one_line_naming_option_and_path():
    """An OSError at a write site becomes a FileFault (a UsageError) with the option and the
    path the caller was writing, not a temporary file's name."""
    with pytest.raises(FileFault, match=r"^--out: cannot write r\.json: No space left"):
        with output_errors("--out", "r.json"):
            raise OSError(28, "No space left on device", ".r.json.123.tmp")


# --- scenario --------------------------------------------------------------------------------

@pytest.mark.parametrize("out,why", [
    (".", "is a directory; give a file path"),
    ("file.json/x.json", "file.json is a file, not a directory"),
    ("/proc/nope/x.json", "cannot create a directory in /proc"),
])
def test_scenario_refuses_an_out_path_it_cannot_write_and_writes_nothing(work, capsys, out, why):
    """``scenario --out`` that is a directory, lies under a regular file or in /proc: one line,
    exit 2, and no exit profile written first (it was ``../NAME.exit_profile.npz``)."""
    before = _tree(work)
    _fails(["scenario", "paper-resnet101", "--samples", "100", "--out", out], capsys, "--out", why)
    assert _tree(work) == before
    assert not os.path.exists(str(work.parent / (work.name + ".exit_profile.npz")))


def test_scenario_refuses_a_directory_where_its_exit_profile_goes(work, capsys):
    """The exit profile's slot (STEM.exit_profile.npz) is checked too, before either is written."""
    (work / "s.exit_profile.npz").mkdir()
    _fails(["scenario", "paper-bert", "--samples", "100", "--out", "s.json"], capsys,
           "s.exit_profile.npz is a directory")
    assert not os.path.exists("s.json")


@pytest.mark.parametrize("setting,option,value,want", [
    ("paper-resnet101", "--rate", "inf", "must be a finite number > 0"),
    ("paper-resnet101", "--rate", "nan", "must be a finite number > 0"),
    ("paper-resnet101", "--load", "inf", "must be in (0, 1)"),
    ("paper-resnet101", "--load", "0", "must be in (0, 1)"),
    ("paper-resnet101", "--load", "nan", "must be in (0, 1)"),
    ("mdi-local", "--link-rate", "inf", "must be a finite number > 0"),
    ("mdi-local", "--node-capacity", "nan", "must be a finite number > 0"),
    ("mdi-local", "--rate", "-1", "must be a finite number > 0"),
    ("paper-resnet101", "--samples", "1000000000000", "must be in [10, 1000000], got"),
    ("paper-resnet101", "--samples", "9", "must be in [10, 1000000], got 9"),
    ("paper-resnet101", "--sources", "100000000", "must be in [1, 10000], got"),
    ("paper-resnet101", "--sources", "0", "must be in [1, 10000], got 0"),
    ("paper-resnet101", "--rate", "1e300", "must be in [1e-09, 1e+24] (a scenario's range)"),
    ("paper-bert", "--rate", "1e-12", "must be in [1e-09, 1e+24] (a scenario's range)"),
    ("mdi-local", "--node-capacity", "1e30", "must be in [1, 1e+24]"),
    ("mdi-local", "--link-rate", "1e25", "must be in [1, 1e+24]"),
])
def test_scenario_refuses_bad_numbers_up_front(work, capsys, setting, option, value, want):
    """``--rate inf`` was written as "rate": Infinity (which ``plan`` then refused): every
    rate, capacity and link rate must be a finite number > 0 and the load in (0, 1).
    ``--samples 10**12`` ran numpy out of memory (a traceback), ``--sources 10**8`` ran for
    minutes and ``--rate 1e300`` wrote a file ``plan`` refused: samples and sources have upper
    bounds, and rates and capacities the scenario reader's own range. All are checked before
    any work is done, with nothing written."""
    before = _tree(work)
    _fails(["scenario", setting, "--out", "s.json", option, value], capsys, option + ": " + want)
    assert _tree(work) == before


def test_scenario_accepts_the_bounds_themselves(work, capsys):
    """The bounds are inclusive: the largest rate a scenario takes is written and read back."""
    from agent.scenario.format import POSITIVE_RANGE, load_scenario

    assert main(["scenario", "paper-bert", "--samples", "10", "--out", "s.json",
                 "--rate", repr(POSITIVE_RANGE[1])]) == 0
    assert {s.rate for s in load_scenario("s.json").sources} == {POSITIVE_RANGE[1]}


@pytest.mark.parametrize("setting,option,value,users", [
    ("mdi-2-node", "--sources", "3", "paper-*"),
    ("mdi-2-node", "--homogeneous", None, "paper-*"),
    ("mdi-2-node", "--load", "0.3", "paper-*"),
    ("dimee-demo", "--samples", "20", "paper-* and mdi-*"),
    ("mlci-demo", "--seed", "5", "paper-* and mdi-*"),
    ("paper-bert", "--node-capacity", "1e9", "mdi-*"),
    ("paper-bert", "--mdi-mode", "admission", "mdi-*"),
])
def test_scenario_refuses_an_option_its_setting_does_not_use(work, capsys, setting, option,
                                                             value, users):
    """An option the setting has no use for is a usage error naming the settings that take
    it: it was ignored without a word, so the file written was not what was asked for."""
    before = _tree(work)
    _fails(["scenario", setting, "--out", "s.json", option] + ([value] if value else []),
           capsys, "%s: applies to %s settings, not %s" % (option, users, setting))
    assert _tree(work) == before


def test_scenario_makes_missing_folders_of_its_out_path(work, capsys):
    """A file in folders still to be made is fine: they are made, both files are written."""
    assert main(["scenario", "paper-bert", "--samples", "100", "--out", "a/b/s.json"]) == 0
    assert sorted(os.listdir("a/b")) == ["s.exit_profile.npz", "s.json"]


# --- simulate --------------------------------------------------------------------------------

def _simulate(work, *extra):
    (work / "base.json").write_text(json.dumps(BASE))
    return ["simulate", "--scenario", "base.json", "--no-plots", "--policies", "cf",
            "--duration", "20", "--warmup", "1"] + list(extra)


@pytest.mark.parametrize("out,why", [
    ("file.json", "file.json is a file, not a directory"),
    ("/proc/x", "cannot create a directory in /proc"),
])
def test_simulate_refuses_an_out_folder_it_cannot_make(work, capsys, out, why):
    """``simulate --out`` naming a regular file or a place in /proc: one line, exit 2."""
    _fails(_simulate(work, "--out", out), capsys, "--out", why)


def test_simulate_refuses_a_directory_where_results_json_goes(work, capsys):
    """--out/results.json being a directory is found before the simulation, not after it."""
    (work / "o" / "results.json").mkdir(parents=True)
    _fails(_simulate(work, "--out", "o"), capsys, "results.json is a directory")


@pytest.mark.parametrize("extra,why", [
    (["--policies", "dimee"], "--policies: the tasks would carry the exit profile's test rows"),
    (["--rows", "test"], "--rows: the tasks would carry"),
    (["--duration", "1e12", "--rates", "1e-9"], "--duration: 1e+12 s is more than 100000 "
                                                "slots of --slot 5 s, the most a run may have "
                                                "(at most 500000 s)"),
    (["--duration", "500001"], "--duration: 500001 s is more than 100000 slots"),
    (["--duration", "inf"], "--duration: must be a finite number"),
    (["--round-delay", "inf"], "--round-delay: must be a finite number"),
    (["--rates", "1e9"], "at most 10000000 per run"),
    (["--rates", "1e-9"], "gives no task"),
    (["--scales", "1e9"], "--scales: each must be in"),
    (["--dynamic-slots", "1000000"], "--dynamic-slots: at most 100000"),
    # no exit profile: every threshold variant would run alike under its own label
    (["--policies", "dtoee,dtoee-c0.7"], "--policies dtoee-c0.7: the scenario has no exit "
                                         "profile"),
    (["--threshold-study"], "--threshold-study: the scenario has no exit profile"),
    (["--policies", "cf,bf,cf"], "--policies: cf named more than once"),
])
def test_simulate_refuses_runs_that_cannot_end_or_only_fail_and_makes_no_folder(
        work, capsys, extra, why):
    """Durations, rates and scales are bounded to finite ranges (``--duration 1e12 --rates
    1e-9`` ran forever) and a policy that needs rows the scenario lacks is named; all before
    the --out folder is made, so a failed run leaves no empty folder."""
    _fails(_simulate(work, "--out", "o", *extra), capsys, why)
    assert not os.path.exists("o")


# --- profile, build, heads -------------------------------------------------------------------

@pytest.mark.parametrize("out,why", [
    (".", "is a directory; give a file path"),
    ("file.json/p.npz", "file.json is a file, not a directory"),
    ("/proc/nope/p.npz", "cannot create a directory in /proc"),
])
def test_profile_checks_out_before_loading_anything(work, capsys, out, why):
    """``profile --out`` is checked before the bundle and data are read (both are missing
    here), and a directory is refused rather than given ".npz" (it wrote DIR.npz)."""
    _fails(["profile", "--bundle", "nobundle", "--data", "nodata.npz", "--out", out], capsys,
           "--out", why)
    assert not os.path.exists(str(work) + ".npz")


def test_profile_refuses_a_directory_at_the_name_with_npz_added(work, capsys):
    """``--out p`` writes p.npz: a directory called p.npz is refused too."""
    (work / "p.npz").mkdir()
    _fails(["profile", "--bundle", "nobundle", "--data", "nodata.npz", "--out", "p"], capsys,
           "p.npz is a directory")


@pytest.mark.parametrize("out,why", [
    ("file.json", "file.json is a file, not a directory"),
    ("file.json/b", "file.json is a file, not a directory"),
    ("/proc/xx", "cannot create a directory in /proc"),
])
def test_build_checks_its_out_folder_before_building(work, capsys, out, why):
    """``build --out`` that is a file, under one, or in /proc: one line, exit 2, before the
    model is even read (it is missing here)."""
    _fails(["build", "--onnx", "missing.onnx", "--cuts", "a,b", "--out", out], capsys,
           "--out", why)


@pytest.mark.parametrize("extra,why", [
    (["--out", "/proc/x/h.onnx"], "--out: cannot create a directory in /proc"),
    (["--out", "."], "--out: . is a directory"),
    (["--out", "h.onnx", "--cache", "file.json"], "--cache: %s is a file, not a directory"),
    (["--out", "h.onnx", "--cache", "/proc/c"], "--cache: cannot create a directory in /proc"),
])
def test_heads_checks_out_and_cache_before_reading_data(work, capsys, extra, why):
    """``heads --out`` and ``--cache`` are checked before the data set is loaded (missing
    here) and any head is trained."""
    _fails(["heads", "--onnx", "missing.onnx", "--at", "a", "--data", "nodata.npz"] + extra,
           capsys, why.replace("%s", str(work / "file.json")))
    assert _tree(work) == ["file.json"]


def test_heads_refuses_a_non_finite_weight_decay(work, capsys):
    """``--weight-decay nan`` passed the old ``< 0`` test: it is refused, naming the option
    and the value."""
    _fails(["heads", "--onnx", "m.onnx", "--at", "a", "--data", "d.npz", "--out", "h.onnx",
            "--weight-decay", "nan"], capsys, "--weight-decay: must be a finite number >= 0, "
                                              "got nan")
