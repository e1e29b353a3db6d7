"""``calibrate --show`` with bundles that share a stage file: with ``--bundle`` the rows are
that bundle's stages, found by their stage files' sha256 as an agent finds them (an entry
measured under another bundle is named "measured as stage N of BUNDLE"; each stage number
once per mode and engine; a stage without an entry listed; other bundles' entries counted);
without ``--bundle`` every entry is a row with a bundle column. It showed the other bundle's
stage numbers with no bundle named (two rows "2", no stage 4). Real profiles written by
``update_profile``, the real demo bundle and the command's own output."""

from __future__ import annotations

from agent.cli import main
from calibration import host
from calibration.profile import ProfileEntry, update_profile
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR

MODE = "cpu-test-1000MHz"


def _entry(ident, bundle, stage, sha256, **over):
    values = dict(board=ident.board, l4t=ident.l4t, power_mode=MODE, stage=stage,
                  stage_sha256=sha256, backend="onnxruntime", precision="fp32", flops=1e6,
                  samples=10, service_time_median_s=0.001, service_time_p90_s=0.001,
                  capacity_flops=1e9, measured_at="2026-01-01T00:00:00Z", bundle=bundle,
                  engine={"backend": "onnxruntime", "device": "CPU", "threads": 1})
    values.update(over)
    return ProfileEntry(**values)


def _profile(tmp_path):
    """The demo bundle's stages 2 and 3 measured under its own name; its stage files 1 and 4
    measured as stages 1 and 3 of bundle "multi" (which shares them), and multi's own stage 2,
    a file the demo bundle does not have."""
    ident, demo = host.read_host_identity(), load_bundle(DEMO_BUNDLE_DIR)
    sha = {s.index: s.sha256 for s in demo.stages}
    update_profile(str(tmp_path / "calibration.json"), [
        _entry(ident, demo.name, 2, sha[2]), _entry(ident, demo.name, 3, sha[3]),
        _entry(ident, "multi", 1, sha[1]), _entry(ident, "multi", 2, "e" * 64),
        _entry(ident, "multi", 3, sha[4])])
    return demo


def _show(capsys, tmp_path, *extra):
    capsys.readouterr()
    assert main(["calibrate", "--show", "--state-dir", str(tmp_path)] + list(extra)) == 0
    return capsys.readouterr().out.splitlines()


def test_with_bundle_each_stage_is_listed_by_its_stage_file(tmp_path, capsys):
    """Rule: --show --bundle lists stages 1..4 of the demo bundle once each, by stage file
    hash; the two measured under "multi" say so; multi's own stage is counted, not shown."""
    demo = _profile(tmp_path)
    lines = _show(capsys, tmp_path, "--bundle", DEMO_BUNDLE_DIR)
    rows = {ln.split()[1]: ln for ln in lines if ln.startswith(MODE)}
    assert sorted(rows) == ["1", "2", "3", "4"] and len(rows) == len(
        [ln for ln in lines if ln.startswith(MODE)])
    assert rows["1"].endswith("measured as stage 1 of multi")
    assert rows["4"].endswith("measured as stage 3 of multi")
    assert "measured as" not in rows["2"] + rows["3"]
    assert ("1 entry of other stage files (not of bundle %s) not shown; --show without "
            "--bundle lists them" % demo.name) in lines


def test_with_bundle_a_stage_without_an_entry_is_named(tmp_path, capsys):
    """Rule: a stage of the bundle with no entry in a mode the board was calibrated in is
    listed below the rows (``not calibrated in MODE: stage(s) ...``)."""
    ident, demo = host.read_host_identity(), load_bundle(DEMO_BUNDLE_DIR)
    update_profile(str(tmp_path / "calibration.json"),
                   [_entry(ident, demo.name, 1, demo.stage(1).sha256)])
    lines = _show(capsys, tmp_path, "--bundle", DEMO_BUNDLE_DIR)
    assert "not calibrated in %s: stage(s) 2,3,4" % MODE in lines


def test_without_bundle_every_entry_names_its_bundle(tmp_path, capsys):
    """Rule: without --bundle every entry is a row, its bundle in a column of its own, so
    the two stage-2 rows are told apart."""
    demo = _profile(tmp_path)
    lines = _show(capsys, tmp_path)
    assert lines[1].split()[:5] == ["mode", "bundle", "stage", "backend", "threads"]
    rows = sorted(tuple(ln.split()[1:3]) for ln in lines if ln.startswith(MODE))
    assert rows == sorted([(demo.name, "2"), (demo.name, "3"), ("multi", "1"),
                           ("multi", "2"), ("multi", "3")])
